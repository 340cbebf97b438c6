"""Serving a BERT text classifier run: POST /v1/classify on the real server; the same run
exported to Hugging Face. The run classifies TFDS's mock imdb_reviews (fast to prepare)."""

import httpx
import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmjax.infer.classify import TextClassifier
from lmjax.infer.load import load
from lmjax.serve.app import create_app
from lmjax.serve.local import serve_in_thread
from lmjax.tasks.base import TEXT_CLASSES

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

LONG = "Now is the winter of our discontent made glorious summer by this sun of York. " * 8


@pytest.fixture(scope="module", autouse=True)
def mock_imdb():
    with tfds.testing.mock_data(num_examples=16):
        yield


@pytest.fixture(scope="module")
def run(tmp_path_factory, load_config, data_cache, mock_imdb):
    """A classifier run's workdir with its step-0 checkpoint (the commands only read it)."""
    from lmjax.convert.hf import write_run

    cfg = load_config("tiny", "classify.py")
    cfg.data.update(name="tfds:imdb_reviews", vocab_size=200, cache_dir=data_cache)
    cfg.mesh.host_cpu_devices = 0
    workdir = str(tmp_path_factory.mktemp("classifier_run"))
    write_run(cfg, workdir, log=lambda s: None)
    return workdir


@pytest.fixture(scope="module")
def loaded(run):
    return load(run, needs=(TEXT_CLASSES,))


def test_classify_endpoint(loaded):
    classifier = TextClassifier.from_loaded(loaded)
    texts = ["To be, or not to be, that is the question.", "Exit, pursued by a bear.", LONG]
    with serve_in_thread(create_app(classifier=classifier, source="tiny")) as url:
        r = httpx.post(f"{url}/v1/classify", json={"texts": texts}, timeout=60)
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        bad = [httpx.post(f"{url}/v1/classify", json=b, timeout=30)
               for b in ({"texts": []}, {"text": "a"}, {"texts": "a"}, {"texts": [""]})]
        health = httpx.get(f"{url}/health").json()
    names = loaded.task.data.class_names
    assert health["classes"] == names
    assert [x["truncated"] for x in results] == [False, False, True]
    # The same numbers as the model applied directly to the framed texts.
    tok, seq = loaded.tokenizer, loaded.task.seq_len
    for text, got in zip(texts, results):
        ids = tok.encode(text)[:seq - 2]
        row = np.full((1, seq), tok.pad_id, np.int32)
        row[0, :len(ids) + 2] = [tok.cls_id, *ids, tok.sep_id]
        logits = loaded.task.model.apply({"params": loaded.params}, row, deterministic=True)
        want = np.asarray(jax.nn.softmax(logits[0]))
        np.testing.assert_allclose([got["probabilities"][n] for n in names], want, atol=1e-5)
        assert got["label"] == names[int(want.argmax())]
    assert [b.status_code for b in bad] == [422] * 4
    assert "texts" in bad[0].json()["error"]
    assert all("attention" not in r for r in results)


def test_classify_return_attention(loaded):
    from lmjax.explain import attention as attn

    classifier = TextClassifier.from_loaded(loaded)
    texts = ["Exit, pursued by a bear.", LONG]
    with serve_in_thread(create_app(classifier=classifier, source="tiny")) as url:
        r = httpx.post(f"{url}/v1/classify", json={"texts": texts, "return_attention": True},
                       timeout=60)
    assert r.status_code == 200, r.text
    # The maps come from the same forward pass as the probabilities, which do not change.
    plain = classifier.classify(texts)
    for with_maps, without in zip(r.json()["results"], plain):
        assert with_maps["label"] == without["label"]
        for name, p in without["probabilities"].items():
            assert abs(with_maps["probabilities"][name] - p) < 1e-6
    tok, seq = loaded.tokenizer, loaded.task.seq_len
    for text, got in zip(texts, r.json()["results"]):
        ids = tok.encode(text)[:seq - 2]
        n = len(ids) + 2
        row = np.full((1, seq), tok.pad_id, np.int32)
        row[0, :n] = [tok.cls_id, *ids, tok.sep_id]
        a = got["attention"]
        assert len(a["tokens"]) == len(a["rollout"]) == len(a["last_layer"]) == n
        assert a["tokens"][0] == tok.decode([tok.cls_id]) or a["tokens"][0] == "[CLS]"
        # The text alone (not batched with the others) gives the same maps: padding is masked.
        maps = attn.attention_maps(loaded.task.model, {"params": loaded.params}, row,
                                   deterministic=True)
        np.testing.assert_allclose(a["last_layer"], np.asarray(maps[-1, 0].mean(0)[0, :n]),
                                   atol=1e-5)
        np.testing.assert_allclose(a["rollout"], np.asarray(attn.rollout(maps)[0, 0, :n]),
                                   atol=1e-5)
        assert abs(sum(a["rollout"]) - 1) < 1e-5 and abs(sum(a["last_layer"]) - 1) < 1e-5


def test_classifier_run_to_hugging_face(run, loaded, tmp_path):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from lmjax.convert.hf import to_hf

    to_hf(run, str(tmp_path))
    hf = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    assert list(hf.config.id2label.values()) == loaded.task.data.class_names
    tok, seq = loaded.tokenizer, loaded.task.seq_len
    ids = tok.encode("My kingdom for a horse!")
    row = np.full((1, seq), tok.pad_id, np.int64)
    row[0, :len(ids) + 2] = [tok.cls_id, *ids, tok.sep_id]
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(row),
                    attention_mask=torch.tensor(row != tok.pad_id)).logits.numpy()
    ours = loaded.task.model.apply({"params": loaded.params}, row.astype(np.int32),
                                   deterministic=True)
    assert np.abs(np.asarray(ours) - theirs).max() <= 1e-4
