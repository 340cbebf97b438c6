"""Sentiment from a pretrained Hugging Face BERT, the way a user runs it, offline: a tiny random
BertForSequenceClassification with its own vocabulary (English, then Chinese) is converted by
`lmjax convert from_hf`, fine-tuned with configs/classify.py:hf_sentiment on a local
table, evaluated, served on POST /v1/classify and exported back with to_hf. The HF model and
lmjax give the same logits on the same tokenized inputs before and after the round trip."""

import json

import flax.linen as nn
import httpx
import jax
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmjax.convert.hf import to_hf  # noqa: E402
from lmjax.infer.classify import TextClassifier  # noqa: E402
from lmjax.infer.load import load  # noqa: E402
from lmjax.serve.app import create_app  # noqa: E402
from lmjax.serve.local import serve_in_thread  # noqa: E402
from lmjax.tasks.base import TEXT_CLASSES  # noqa: E402
from lmjax.train.loop import train_and_evaluate  # noqa: E402
from lmjax.train.restore import evaluate_run  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

SPECIAL = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
LANGS = {
    # (vocabulary, positive words, negative words, filler, tokenizer_config.json or None)
    "en": ("the a is this movie film i it was , . ! good great fun love awful bad boring "
           "terrible".split(), ["good", "great", "fun", "love"],
           ["awful", "bad", "boring", "terrible"], ["The", "movie", "was", "this", "film", "!"],
           {"do_lower_case": True, "tokenizer_class": "BertTokenizer"}),
    # bert-base-chinese keeps only a vocab.txt (read with BertTokenizer's defaults) here
    "zh": list("这部电影很好看不喜欢无聊精彩糟糕我们的了，。！"),
}
LANGS["zh"] = (LANGS["zh"], ["好看", "喜欢", "精彩"], ["无聊", "糟糕", "不好看"],
               ["这部", "电影", "我们", "的", "了", "！"], None)
SEQ = 32  # fine-tuning context; the HF model has 64 positions


def _table(lang, n, seed):
    _, pos, neg, filler, _ = LANGS[lang]
    rng = np.random.default_rng(seed)
    sep = " " if lang == "en" else ""
    rows = []
    for i in range(n):
        label = "positive" if i % 2 else "negative"
        words = list(rng.choice(filler, 4)) + [rng.choice(pos if i % 2 else neg)]
        rng.shuffle(words)
        rows.append({"text": sep.join(words), "label": label})
    return rows


def _write_table(path, rows):
    if path.suffix == ".csv":
        import csv
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, ["text", "label"])
            w.writeheader()
            w.writerows(rows)
    else:
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                        encoding="utf-8")


def _hf_logits(model, tok, texts, length):
    enc = tok(texts, padding="max_length", max_length=length, truncation=True,
              return_tensors="pt")
    with torch.no_grad():
        logits = model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits
    return enc["input_ids"].numpy(), logits.numpy()


def _ours(loaded, texts):
    """lmjax's framing of `texts` and the model's logits on it."""
    tok, seq = loaded.tokenizer, loaded.task.seq_len
    rows = np.full((len(texts), seq), tok.pad_id, np.int32)
    for r, text in enumerate(texts):
        ids = tok.encode(text)[:seq - 2]
        rows[r, :len(ids) + 2] = [tok.cls_id, *ids, tok.sep_id]
    return rows, np.asarray(loaded.task.model.apply({"params": loaded.params}, rows))


def _hf_dir(root, lang):
    words, *_, tok_config = LANGS[lang]
    hf_dir = root / "hf"
    hf_dir.mkdir()
    (hf_dir / "vocab.txt").write_text("\n".join(SPECIAL + words) + "\n", encoding="utf-8")
    if tok_config:
        (hf_dir / "tokenizer_config.json").write_text(json.dumps(tok_config))
    config = transformers.BertConfig(
        vocab_size=len(SPECIAL) + len(words), hidden_size=32, num_hidden_layers=2,
        num_attention_heads=4, intermediate_size=64, max_position_embeddings=64,
        id2label={0: "negative", 1: "positive"}, label2id={"negative": 0, "positive": 1},
        initializer_range=0.2)
    torch.manual_seed(0)
    transformers.BertForSequenceClassification(config).eval().save_pretrained(hf_dir)
    return hf_dir


def _texts(lang):
    sep = " " if lang == "en" else ""
    return [r["text"] for r in _table(lang, 6, 2)] + [sep.join([LANGS[lang][1][0]] * 40)]


@pytest.fixture(scope="module")
def converted_zh(tmp_path_factory):
    """The Chinese model (vocab.txt only, as bert-base-chinese): converted through the library
    and exported straight back (the English one goes through every command below)."""
    from lmjax.config import load_config
    from lmjax.convert.hf import from_hf

    root = tmp_path_factory.mktemp("bert_zh")
    hf_dir = _hf_dir(root, "zh")
    cfg = load_config("configs/classify.py")
    from_hf(str(hf_dir), str(root / "converted"), cfg, log=lambda s: None)
    to_hf(str(root / "converted"), str(root / "exported"))
    return dict(lang="zh", hf_dir=hf_dir, converted=str(root / "converted"),
                exported=root / "exported", texts=_texts("zh"),
                loaded=load(str(root / "converted"), needs=(TEXT_CLASSES,)))


@pytest.fixture(scope="module")
def flow(tmp_path_factory, run_module, load_config):
    """English: convert (the command), fine-tune a few steps on a CSV (validation: JSONL),
    export (the whole pipeline once for the module)."""
    root = tmp_path_factory.mktemp("bert_flow_en")
    hf_dir = _hf_dir(root, "en")
    train, val = root / "train.csv", root / "val.jsonl"
    _write_table(train, _table("en", 48, 0))
    _write_table(val, _table("en", 16, 1))

    converted = root / "converted"
    r = run_module("convert", "from_hf", f"--hf={hf_dir}", f"--workdir={converted}")
    assert r.returncode == 0, r.stderr
    assert "--config.init_from=" in r.stdout

    cfg = load_config("hf_sentiment", "classify.py")
    cfg.init_from = str(converted)
    cfg.data.update(files=str(train), val_files=str(val))
    cfg.model.block_size = SEQ
    cfg.train.update(num_steps=4, batch_size=8, log_every=2, eval_every=4)
    cfg.optim.update(learning_rate=2e-3, warmup_steps=1)
    cfg.checkpoint.every = 4
    cfg.log.update(tensorboard=False, progress_bar=False)
    cfg.mesh.data = 1
    workdir = root / "sentiment"
    summary = train_and_evaluate(cfg, str(workdir))
    exported = root / "exported"
    to_hf(str(workdir), str(exported))
    return dict(lang="en", hf_dir=hf_dir, converted=str(converted), workdir=str(workdir),
                exported=exported, summary=summary, cfg=cfg, texts=_texts("en"),
                loaded=load(str(converted), needs=(TEXT_CLASSES,)))


@pytest.fixture(params=["en", "zh"])
def converted(request):
    return request.getfixturevalue("flow" if request.param == "en" else "converted_zh")


def test_converted_run_gives_the_hf_logits_on_the_hf_tokenization(converted):
    hf = transformers.BertForSequenceClassification.from_pretrained(converted["hf_dir"]).eval()
    hf_tok = transformers.BertTokenizerFast.from_pretrained(converted["hf_dir"])
    loaded = converted["loaded"]
    assert loaded.task.class_names == ["negative", "positive"]
    rows, ours = _ours(loaded, converted["texts"])
    ids, theirs = _hf_logits(hf, hf_tok, converted["texts"], rows.shape[1])
    np.testing.assert_array_equal(rows, ids)  # the same tokens, [CLS]/[SEP]/[PAD] included
    assert (rows == hf_tok.unk_token_id).sum() == 0 and (rows[:, 0] == 101).all()
    assert np.abs(theirs).max() > 0.05 and np.abs(theirs[0] - theirs[1]).max() > 1e-3
    assert np.abs(ours - theirs).max() <= 1e-4


def test_chinese_round_trip_keeps_tokens_and_logits(converted_zh):
    hf = transformers.BertForSequenceClassification.from_pretrained(converted_zh["hf_dir"]).eval()
    back = transformers.BertForSequenceClassification.from_pretrained(
        converted_zh["exported"]).eval()
    tok = transformers.BertTokenizerFast.from_pretrained(converted_zh["hf_dir"])
    tok_back = transformers.BertTokenizerFast.from_pretrained(converted_zh["exported"])
    ids, want = _hf_logits(hf, tok, converted_zh["texts"], 64)
    ids_back, got = _hf_logits(back, tok_back, converted_zh["texts"], 64)
    np.testing.assert_array_equal(ids, ids_back)
    assert np.abs(got - want).max() <= 1e-4 and back.config.id2label[1] == "positive"


def test_fine_tuning_starts_from_the_whole_converted_classifier(flow):
    from lmjax.tasks import make_task

    task = make_task(flow["cfg"], log=lambda s: None)
    assert task.tokenizer.cls_id == 101 and task.seq_len == SEQ
    source = flow["loaded"].params
    shapes = nn.meta.unbox(jax.eval_shape(task.init_variables, jax.random.PRNGKey(0)))
    fresh = jax.tree.map(lambda x: np.zeros(x.shape, x.dtype), shapes["params"])
    started = task.load_pretrained(fresh, source)
    np.testing.assert_array_equal(started["bert"]["position_embeddings"],
                                  source["bert"]["position_embeddings"][:SEQ])
    for part in ("pooler", "classifier"):  # same class names: the head comes along
        jax.tree.map(np.testing.assert_array_equal, started[part], source[part])


def test_fine_tune_evaluate_serve_and_export(flow):
    summary = flow["summary"]
    assert 0 <= summary["val_accuracy"] <= 1 and "val_f1_macro" in summary
    again = evaluate_run(flow["workdir"], best=False)
    assert set(again) >= {"accuracy", "f1_macro", "loss"} and 0 <= again["accuracy"] <= 1
    loaded = load(flow["workdir"], needs=(TEXT_CLASSES,))
    converted = flow["loaded"]
    moved = np.abs(np.asarray(loaded.params["classifier"]["kernel"]) -
                   np.asarray(converted.params["classifier"]["kernel"])).max()
    assert moved > 1e-5  # it trained
    texts = flow["texts"]
    classifier = TextClassifier.from_loaded(loaded)
    with serve_in_thread(create_app(classifier=classifier, source=flow["lang"])) as url:
        r = httpx.post(f"{url}/v1/classify", json={"texts": texts}, timeout=60)
    assert r.status_code == 200, r.text
    served = np.array([[x["probabilities"][n] for n in ("negative", "positive")]
                       for x in r.json()["results"]])
    assert [x["truncated"] for x in r.json()["results"]] == [False] * (len(texts) - 1) + [True]
    # The export: transformers loads the model and the tokenizer; the same logits again.
    hf = transformers.BertForSequenceClassification.from_pretrained(flow["exported"]).eval()
    hf_tok = transformers.BertTokenizerFast.from_pretrained(flow["exported"])
    assert hf.config.id2label == {0: "negative", 1: "positive"}
    rows, ours = _ours(loaded, texts)
    ids, theirs = _hf_logits(hf, hf_tok, texts, SEQ)
    np.testing.assert_array_equal(rows, ids)
    assert np.abs(ours - theirs).max() <= 1e-4
    np.testing.assert_allclose(served, np.asarray(jax.nn.softmax(theirs)), atol=1e-4)
