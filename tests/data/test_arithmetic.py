"""Two-digit addition records: every problem once, a held-out split, a tokenizer that covers
the rendered examples; `lmjax addition_data` writes them."""

import json

import pytest

from lmjax.data import arithmetic
from lmjax.data import sft as sft_data


def test_every_problem_once_with_a_disjoint_held_out_split():
    sets = arithmetic.build(seed=3, val=100)
    train, val = sets["train"], sets["val"]
    assert len(train) + len(val) == 90 * 90 and len(val) == 100
    assert not {r["prompt"] for r in train} & {r["prompt"] for r in val}
    for r in train[:50] + val:
        a, b = map(int, r["prompt"].split("+"))
        assert 10 <= a <= 99 and 10 <= b <= 99 and int(r["response"]) == a + b
    assert arithmetic.build(seed=3, val=100) == sets
    assert arithmetic.build(seed=4, val=100)["val"] != val
    tok = arithmetic.tokenizer()
    text = sft_data.format_prompt(sft_data.DEFAULT_TEMPLATE, val[0]["prompt"]) + \
        val[0]["response"] + sft_data.DEFAULT_END
    assert 0 not in tok.encode(text).tolist() and tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="val=0"):
        arithmetic.build(val=0)


def test_a_padded_tokenizer_keeps_the_records_ids_and_decodes_every_id(tmp_path):
    # A released vocabulary's size (random-weight throughput runs): any sampled id decodes.
    plain, padded = arithmetic.tokenizer(), arithmetic.tokenizer(vocab_size=151936)
    assert padded.vocab_size == 151936 and padded.chars.startswith(plain.chars)
    text = sft_data.format_prompt(sft_data.DEFAULT_TEMPLATE, "47+38") + "85"
    assert padded.encode(text).tolist() == plain.encode(text).tolist()
    assert len(padded.decode(range(151936))) == 151936
    padded.save(str(tmp_path))
    assert json.load(open(tmp_path / "tokenizer.json"))["chars"] == padded.chars
    with pytest.raises(ValueError, match="vocab_size=4"):
        arithmetic.tokenizer(vocab_size=4)


@pytest.mark.slow
def test_the_command_writes_records_and_tokenizer(run_module, tmp_path):
    r = run_module("addition_data", f"--out={tmp_path}", "--val=10")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "8090 training and 10 held-out" in r.stdout
    with open(tmp_path / "val.jsonl") as f:
        assert [json.loads(line) for line in f] == arithmetic.build(val=10)["val"]
    assert json.load(open(tmp_path / "tokenizer.json"))["kind"] == "char"
