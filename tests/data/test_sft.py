"""SFT data: records, the template, the response mask, packing, the sources."""

import json

import ml_collections
import numpy as np
import pytest

from lmjax.data import qa_shakespeare, sft
from lmjax.data.tokenizers import CharTokenizer

TEMPLATE = sft.DEFAULT_TEMPLATE
TOK = CharTokenizer("\x00\n !'?.,:" + "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ{}")


def test_format_prompt_is_the_template_up_to_the_response():
    assert sft.format_prompt(TEMPLATE, "Who?") == "Question: Who?\nAnswer: "
    # Braces in a question are text, not format fields.
    assert sft.format_prompt("Q: {prompt} A: {response}", "a {b}") == "Q: a {b} A: "
    with pytest.raises(sft.SFTDataError, match="end with"):
        sft.format_prompt("{response} then {prompt}", "x")


def test_pieces_of_pairs_and_chats():
    assert sft.pieces({"prompt": "Who?", "response": "Romeo"}, TEMPLATE, "\n\n") == [
        ("Question: Who?\nAnswer: ", False), ("Romeo\n\n", True)]
    chat = {"messages": [{"role": "system", "content": "Be brief."},
                         {"role": "user", "content": "Who?"},
                         {"role": "assistant", "content": "Romeo"},
                         {"role": "user", "content": "Where?"},
                         {"role": "assistant", "content": "Verona"}]}
    got = sft.pieces(chat, TEMPLATE, "\n\n")
    assert "".join(t for t, _ in got) == ("Be brief.\nQuestion: Who?\nAnswer: Romeo\n\n"
                                          "Question: Where?\nAnswer: Verona\n\n")
    assert [r for _, r in got] == [False, False, True, False, True]
    with pytest.raises(sft.SFTDataError, match="record 3: a record needs string 'prompt'"):
        sft.pieces({"question": "x"}, TEMPLATE, "\n\n", "record 3")
    with pytest.raises(sft.SFTDataError, match="role"):
        sft.pieces({"messages": [{"role": "bot", "content": "x"}]}, TEMPLATE, "\n\n")
    with pytest.raises(sft.SFTDataError, match="no 'assistant'"):
        sft.pieces({"messages": [{"role": "user", "content": "x"}]}, TEMPLATE, "\n\n")


def test_encode_masks_the_prompt_and_truncates_it_from_the_left():
    parts = sft.pieces({"prompt": "Who?", "response": "Romeo"}, TEMPLATE, "\n\n")
    e = sft.encode(TOK, parts, 100)
    assert TOK.decode(e.tokens) == "Question: Who?\nAnswer: Romeo\n\n"
    assert TOK.decode(e.tokens[e.loss]) == "Romeo\n\n"
    short = sft.encode(TOK, parts, 12)  # keeps the end of the prompt and the whole response
    assert TOK.decode(short.tokens) == "wer: Romeo\n\n"
    assert sft.encode(TOK, parts, 5) is None  # the response alone does not fit


def test_rows_shift_targets_and_weight_responses_only():
    e = sft.encode(TOK, [("ab", False), ("cd", True)], 10)
    r = sft.rows([e], 6)
    np.testing.assert_array_equal(r["inputs"][0], TOK.encode("abc").tolist() + [0, 0, 0])
    np.testing.assert_array_equal(r["targets"][0, :3], TOK.encode("bcd"))
    np.testing.assert_array_equal(r["loss_weights"][0], [0, 1, 1, 0, 0, 0])
    np.testing.assert_array_equal(r["segment_ids"][0], [1, 1, 1, 0, 0, 0])


def test_pack_groups_fills_rows_and_keeps_every_example_once():
    lengths = [5, 9, 3, 17, 8, 2, 11, 6]
    groups = sft.pack_groups(lengths, 17, np.arange(len(lengths)))
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    assert all(sum(lengths[i] - 1 for i in g) <= 17 for g in groups)
    assert len(groups) < len(lengths)
    rows = sft.pack([[sft.Example(np.ones(lengths[i], np.int32), np.ones(lengths[i], bool))
                      for i in g] for g in groups], 17)
    assert int((rows["segment_ids"] > 0).sum()) == sum(n - 1 for n in lengths)


def _data(**fields):
    d = ml_collections.ConfigDict(dict(name="jsonl", train_file="", val_file="",
                                       val_fraction=0.25, qa_seed=0, max_examples=0,
                                       val_split=""))
    d.update(fields)
    return d


def test_jsonl_records_and_readable_errors(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"q{i}", "response": f"a{i}"}) + "\n"
                            for i in range(8)))
    train, val = sft.load_records(_data(train_file=str(path)))
    assert len(train) == 6 and len(val) == 2
    assert {r["prompt"] for r in train + val} == {f"q{i}" for i in range(8)}
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "q", "response": "a"}\nnot json\n')
    with pytest.raises(sft.SFTDataError, match="bad.jsonl:2: not JSON"):
        sft.load_records(_data(train_file=str(bad)))
    with pytest.raises(sft.SFTDataError, match="is not a file"):
        sft.load_records(_data(train_file=str(tmp_path / "missing.jsonl")))


def test_squad_through_tfds_data_source_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        train, val = sft.load_records(_data(name="tfds:squad"))
    assert len(train) == 3 and len(val) == 3
    r = train[0]
    assert r["response"] == r["answers"][0] and len(r["answers"]) >= 1
    assert r["prompt"].count("\n") >= 1  # context, then the question
    assert all(isinstance(a, str) for a in r["answers"])


WORKS = {
    "tempest": "PROSPERO.\nNow does my project gather to a head;\nMy charms crack not.\n\n"
               "ARIEL.\nOn the sixth hour; at which time, my lord,\n\n"
               "PROSPERO.\nI did say so, when first I raised the tempest.\n\n"
               "PROSPERO.\nHow fares the king and his followers?\n\n"
               "ARIEL.\nConfined together in the same fashion\n\n"
               "ARIEL.\nJust as you left them; all prisoners, sir,\n\n",
    "macbeth": "MACBETH.\nSo foul and fair a day I have not seen.\n\n"
               "MACBETH.\nSpeak, if you can: what are you?\n\n"
               "MACBETH.\nStay, you imperfect speakers, tell me more.\n\n"
               "BANQUO.\nHow far is it called to Forres? What are these,\n\n",
}


def test_qa_set_questions_and_a_split_by_question():
    lines, chars = qa_shakespeare.questions(WORKS)
    assert {"prompt": "Who speaks the line 'So foul and fair a day I have not seen.'?",
            "response": "Macbeth", "kind": "speaker", "work": "macbeth"} in lines
    assert sorted((q["prompt"], q["response"]) for q in chars) == [
        ("In which play does Ariel appear?", "The Tempest"),
        ("In which play does Macbeth appear?", "Macbeth"),
        ("In which play does Prospero appear?", "The Tempest")]
    qa = qa_shakespeare.build(seed=1, val_per_kind=1, works=WORKS)
    assert qa["val"] and not {q["prompt"] for q in qa["val"]} & {q["prompt"] for q in qa["train"]}
    assert qa_shakespeare.title("henry_iv_part_1") == "Henry IV Part 1"
    assert qa_shakespeare.title("measure_for_measure") == "Measure for Measure"


def test_reading_set_asks_about_a_speech_in_its_own_passage():
    speakers = ["PROSPERO", "ARIEL", "FIRST LORD", "CALIBAN"]
    works = {"tempest": "\n\n".join(f"{speakers[i % 4]}.\nThis is speech number {i}, line one.\n"
                                      f"And its second line, {i}." for i in range(60)),
             "sonnets": "FROM.\nfairest creatures we desire increase,"}  # a poem: skipped
    qa = qa_shakespeare.reading(seed=0, n_val=3, works=works)
    records = qa["train"] + qa["val"]
    assert len(qa["val"]) == 3 and len(records) >= 60 // 8
    for r in records:
        passage, question = r["prompt"].rsplit("\n", 1)
        line = question[len("Who speaks the line '"):-len("'?")]
        assert question == qa_shakespeare.LINE_Q.format(line) and r["kind"] == "reading"
        # The answer is the tag just above the line, which occurs once in the passage.
        assert passage.count(f"{r['response'].upper()}.\n{line}\n") == 1
        assert passage.split("\n").count(line) == 1 and passage.count("\n\n") < 8
    # Passages never overlap, so no validation line is in a training passage.
    blocks = [b for r in records for b in r["prompt"].rsplit("\n", 1)[0].split("\n\n")]
    assert len(blocks) == len(set(blocks))
    assert len({len(r["prompt"]) for r in records}) > 3  # lengths vary
