"""Question-answering metrics: exact match and token F1 with SQuAD v1.1's definitions.

As the official evaluation script (`evaluate-v1.1.py`) computes them: both strings are
normalised (lower case, punctuation removed, the articles a/an/the removed, whitespace
collapsed); exact match compares the normalised strings, F1 the bags of their words; a
prediction scores its best over the question's reference answers; totals are percentages.
"""

from __future__ import annotations

import collections
import re
import string

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD's normalize_answer: lower, remove punctuation, remove articles, fix whitespace."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(prediction: str, reference: str) -> float:
    return float(normalize(prediction) == normalize(reference))


def f1(prediction: str, reference: str) -> float:
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    same = sum((collections.Counter(pred) & collections.Counter(ref)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(ref)
    return 2 * precision * recall / (precision + recall)


def best(metric, prediction: str, references: list[str]) -> float:
    """The prediction's best score over the reference answers."""
    if not references:
        raise ValueError("a question needs at least one reference answer.")
    return max(metric(prediction, r) for r in references)


def scores(predictions: list[str], references: list[list[str]]) -> dict:
    """{'exact_match', 'f1'} in percent over the questions, and their 'count'."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions for {len(references)} questions.")
    n = len(predictions)
    em = sum(best(exact_match, p, r) for p, r in zip(predictions, references))
    f = sum(best(f1, p, r) for p, r in zip(predictions, references))
    return {"exact_match": 100.0 * em / max(n, 1), "f1": 100.0 * f / max(n, 1), "count": n}


def references(record: dict) -> list[str]:
    """A QA record's reference answers: 'answers' if it has them (SQuAD keeps several), else
    its 'response', or a chat's last assistant message."""
    if record.get("answers"):
        return list(record["answers"])
    if "response" in record:
        return [record["response"]]
    said = [m["content"] for m in record.get("messages", []) if m.get("role") == "assistant"]
    return said[-1:]
