"""Exact match and token F1 against the SQuAD v1.1 official script's definitions."""

import collections
import re
import string

import pytest

from lmjax.eval import qa


# The official evaluate-v1.1.py functions, verbatim in substance: the reference.
def _squad_normalize(s):
    def remove_articles(text):
        return re.sub(r'\b(a|an|the)\b', ' ', text)

    def white_space_fix(text):
        return ' '.join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return ''.join(ch for ch in text if ch not in exclude)

    return white_space_fix(remove_articles(remove_punc(s.lower())))


def _squad_f1(prediction, ground_truth):
    p, g = _squad_normalize(prediction).split(), _squad_normalize(ground_truth).split()
    common = collections.Counter(p) & collections.Counter(g)
    num_same = sum(common.values())
    if num_same == 0:
        return 0
    precision, recall = 1.0 * num_same / len(p), 1.0 * num_same / len(g)
    return (2 * precision * recall) / (precision + recall)


CASES = [
    ("The Tempest", "tempest"),
    ("  the   TEMPEST!! ", "The Tempest"),
    ("A Midsummer Night's Dream", "Midsummer Nights Dream"),
    ("an apple, the pear", "apple pear"),
    ("Theatre", "the atre"),             # 'the' inside a word is not an article
    ("King Lear", "Lear"),
    ("Romeo", "Juliet"),
    ("", "Romeo"),
    ("the", "a"),                        # both normalise to empty: exact match, F1 0
    ("Henry IV, Part 1", "Henry IV Part 2"),
    ("1,000 men", "1000 men"),
]


@pytest.mark.parametrize("pred,ref", CASES)
def test_matches_the_official_definitions(pred, ref):
    assert qa.normalize(pred) == _squad_normalize(pred)
    assert qa.exact_match(pred, ref) == float(_squad_normalize(pred) == _squad_normalize(ref))
    assert qa.f1(pred, ref) == pytest.approx(_squad_f1(pred, ref))


def test_hand_computed_values():
    assert qa.normalize("  The  Winter's, TALE.") == "winters tale"
    assert qa.exact_match("the Tempest.", "Tempest") == 1.0
    # 'king lear' vs 'lear': precision 1/2, recall 1 -> F1 2/3
    assert qa.f1("King Lear", "Lear") == pytest.approx(2 / 3)
    # 'henry iv part 1' vs 'henry iv part 2': 3 of 4 both ways -> 0.75
    assert qa.f1("Henry IV, Part 1", "Henry IV Part 2") == pytest.approx(0.75)
    assert qa.f1("the", "a") == 0.0 and qa.exact_match("the", "a") == 1.0


def test_scores_take_the_best_reference_and_are_percentages():
    out = qa.scores(["Denver Broncos", "Paris", "blue"],
                    [["Broncos", "Denver Broncos"], ["London"], ["the blue sky"]])
    assert out["count"] == 3
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 0 + 2 * 1 * 0.5 / 1.5) / 3)
    with pytest.raises(ValueError, match="2 predictions for 1"):
        qa.scores(["a", "b"], [["a"]])


def test_references_of_each_record_shape():
    assert qa.references({"prompt": "q", "response": "r"}) == ["r"]
    assert qa.references({"prompt": "q", "response": "r", "answers": ["r", "s"]}) == ["r", "s"]
    chat = {"messages": [{"role": "user", "content": "q"},
                         {"role": "assistant", "content": "a1"},
                         {"role": "user", "content": "q2"},
                         {"role": "assistant", "content": "a2"}]}
    assert qa.references(chat) == ["a2"]
