"""Text and attention explanations: the library pieces in-process (chunked IG equals one call,
attention cropped to the real tokens, LIME over words with [UNK] as the removed word), and
`lmjax explain` on a tiny BERT classifier run and a tiny GPT run."""

import csv
import json
import os
from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data.tokenizers import WordPieceTokenizer
from lmjax.cli.explain import run_kind
from lmjax.explain import sequences
from lmjax.models import bert, gpt
from lmjax.models.decoder import Decoder
from lmjax.tasks.base import CLASSES, IMAGES
from lmjax.tasks.lm import LanguageModelTask
from lmjax.tasks.mlm import MaskedLMTask
from lmjax.tasks.text_classification import TextClassificationTask

WORDS = "the king queen sword crown night day love death war peace river stone".split()


def _texts(n, seed=0):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = int(rng.integers(2))
        words = list(rng.choice(WORDS, 10))
        words[int(rng.integers(10))] = "joy" if label else "grief"
        rows.append((" ".join(words), ["neg", "pos"][label]))
    return rows


@pytest.fixture(scope="module")
def tokenizer():
    return WordPieceTokenizer.train([t for t, _ in _texts(100)] * 2, vocab_size=120)


@pytest.mark.slow
def test_token_ig_attention_and_lime_on_a_bert_classifier(bert_config, tokenizer):
    cfg = bert_config(vocab_size=tokenizer.vocab_size, block_size=16, num_classes=2)
    module = bert.Classifier(cfg)
    rows = sequences.frame_texts(tokenizer, ["the king joy", "war and peace river stone"] * 3,
                                 16)
    assert (rows[:, 0] == tokenizer.cls_id).all()
    params = jax.jit(module.init)(jax.random.key(0), jnp.asarray(rows))["params"]
    targets = np.array([0, 1, 0, 1, 0, 1])
    # In chunks of 4, the last padded with [PAD] rows (completeness: tests/explain/test_text.py).
    ig = sequences.token_ig(module, params, rows, targets, tokenizer.pad_id, steps=4, chunk=4)
    assert ig.shape == rows.shape and np.isfinite(ig).all()
    np.testing.assert_allclose(ig[:2], ig[2:4], atol=1e-6)  # the same rows, the same targets
    n = sequences.lengths(rows, tokenizer.pad_id)
    assert list(n) == [int((r != tokenizer.pad_id).sum()) for r in rows]

    found = sequences.attention(module, params, rows[:2], tokenizer, tokenizer.pad_id)
    assert [a.maps.shape for a in found] == [(2, 2, n[0], n[0]), (2, 2, n[1], n[1])]
    assert found[0].tokens[0] == "[CLS]" and found[0].tokens[-1] == "[SEP]"
    for a in found:  # cropping loses nothing: the real tokens never attend to padding
        np.testing.assert_allclose(a.maps.sum(-1), 1.0, atol=1e-5)
        np.testing.assert_allclose(a.rollout.sum(-1), 1.0, atol=1e-5)

    prob = sequences.class_probabilities(module, params, tokenizer, 16, chunk=4)
    p = prob(["the king joy", "war", "the king joy"])
    assert p.shape == (3, 2)
    np.testing.assert_allclose(p[0], p[2], atol=1e-6)
    np.testing.assert_allclose(p.sum(-1), 1.0, atol=1e-5)
    # LIME's removed words become [UNK], one id, so every sample keeps its length.
    assert list(tokenizer.encode("the [UNK] joy")) == [
        tokenizer.encode("the")[0], tokenizer.unk_id, tokenizer.encode("joy")[0]]
    words, res = sequences.lime_words("the king joy river", 1, prob, samples=32)
    assert words == ["the", "king", "joy", "river"] and res.weights.shape == (4,)


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory, load_config, save_untrained):
    d = tmp_path_factory.mktemp("text_run")
    table = d / "t.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["text", "label"])
        w.writerows(_texts(60))
    cfg = load_config("tiny", "classify.py")
    cfg.data.update(name="files", files=str(table), vocab_size=120)
    cfg.model.block_size = 16
    cfg.log.tensorboard = False
    run = str(d / "run")
    save_untrained(cfg, run)
    return run


@pytest.mark.slow
def test_command_explains_a_text_classifier(classifier_run, tmp_path, run_module):
    out = str(tmp_path / "out")
    r = run_module("explain", f"--workdir={classifier_run}", "--method=ig",
                   "--examples=1:4", "--steps=4", f"--out={out}")
    assert r.returncode == 0, r.stderr
    with open(os.path.join(out, "ig.json")) as f:
        record = json.load(f)
    assert [e["index"] for e in record["examples"]] == [1, 2, 3]
    e = record["examples"][0]
    assert e["tokens"][0] == "[CLS]" and e["tokens"][-1] == "[SEP]"
    assert len(e["attribution"]) == len(e["tokens"]) and e["label"] in ("neg", "pos")
    with open(os.path.join(out, "ig.html")) as f:
        assert f.read().count("<span") == sum(len(e["tokens"]) for e in record["examples"])
    with open(os.path.join(out, "ig.png"), "rb") as f:
        assert f.read(4) == b"\x89PNG"
    # Text IG starts from [PAD]'s embeddings: an image baseline, even the black one, is refused.
    r = run_module("explain", f"--workdir={classifier_run}", "--method=ig",
                   "--baseline=black", f"--out={out}")
    assert r.returncode == 2 and "lmjax: error: --baseline is for image runs" in r.stderr


def test_each_kind_of_run_names_its_methods(gpt_config, decoder_config):
    classes = {"classify": frozenset({IMAGES, CLASSES}),  # an image classifier's
               "text_classify": TextClassificationTask.capabilities,
               "mlm": MaskedLMTask.capabilities, "lm": LanguageModelTask.capabilities}

    def kind(task, model=None):
        return run_kind(SimpleNamespace(task=task), SimpleNamespace(
            model=model, capabilities=classes[task]))

    assert kind("classify") == "image"
    assert kind("text_classify") == "text" and kind("mlm") == "mlm"
    assert kind("lm", gpt.GPT(gpt_config())) == "lm"
    assert kind("lm", Decoder(decoder_config("llama"))) == "lm"
    with pytest.raises(ValueError, match="'lm' runs \\(LSTM\\) have nothing here to explain"):
        kind("lm", type("LSTM", (), {})())
    for k, method, message in [
            ("image", "attention", "--method=attention: r is an image classifier, and attention "
             "maps are for language model and BERT runs: use one of saliency"),
            ("text", "gradcam", "--method=gradcam explains image classifiers; r is a BERT text "
             "classifier: use --method=ig, lime or attention."),
            ("lm", "lime", "--method=lime: r is a language model run, whose predictions "
             "are not classes: use --method=attention.")]:
        with pytest.raises(ValueError) as e:
            sequences.check_method(k, method, "r")
        assert str(e.value).startswith(message)
    sequences.check_method("text", "attention", "r")
    sequences.check_method("mlm", "attention", "r")


def test_gpt_attention_is_causal_and_whole(gpt_config):
    from lmjax.data.tokenizers import CharTokenizer

    tok = CharTokenizer.train(["abcdefgh ROMEO:"])
    cfg = gpt_config(vocab_size=tok.vocab_size, scan_layers=True)
    rows = np.stack([tok.encode("ROMEO: a"), tok.encode("abcdefgh")]).astype(np.int32)
    params = jax.jit(gpt.GPT(cfg).init)(jax.random.key(0), jnp.asarray(rows))["params"]
    found = sequences.attention(gpt.GPT(cfg), params, rows, tok, None)
    assert found[0].tokens == list("ROMEO: a") and found[0].maps.shape == (2, 2, 8, 8)
    assert float(np.abs(np.triu(found[1].maps, 1)).max()) == 0.0
    np.testing.assert_allclose(found[1].rollout.sum(-1), 1.0, atol=1e-5)
