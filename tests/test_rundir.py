"""The run directory is the artifact: copied elsewhere, with no corpus and no data cache, a run
still generates, serves, converts and classifies; older runs are upgraded on load."""

import json
import os
import shutil

import numpy as np
import pytest

from lmjax import rundir
from lmjax.checkpoint import CheckpointError
from lmjax.convert.hf import to_hf, write_run
from lmjax.data import corpora, text_classification
from lmjax.infer.load import load
from lmjax.models.generator import Generator, Request
from lmjax.tasks.base import TEXT_CLASSES


@pytest.fixture(scope="module")
def gpt_run(tmp_path_factory, load_config):
    cfg = load_config("tiny")
    cfg.data.cache_dir = str(tmp_path_factory.mktemp("own_cache"))
    cfg.mesh.host_cpu_devices = 0
    workdir = str(tmp_path_factory.mktemp("runs") / "gpt")
    write_run(cfg, workdir, log=lambda s: None)
    return workdir, cfg.data.cache_dir


@pytest.fixture
def no_data(monkeypatch, tmp_path):
    """Any read of a corpus or of labelled texts fails; the default cache is an empty folder."""
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    monkeypatch.setenv("LMJAX_CACHE", str(empty))

    def refuse(*args, **kwargs):
        raise AssertionError("the data was read")

    monkeypatch.setattr(corpora, "load_corpus", refuse)
    monkeypatch.setattr(text_classification, "load", refuse)
    return empty


def _greedy(path):
    loaded = load(path)
    gen = Generator(loaded.model, loaded.params, loaded.tokenizer)
    return gen.generate([Request("ROMEO:", max_new_tokens=12)])[0].text


@pytest.mark.slow
def test_training_writes_what_inference_needs(gpt_run):
    workdir, _ = gpt_run
    meta = json.load(open(os.path.join(workdir, rundir.META)))
    assert meta["task"] == "lm" and meta["format"] == rundir.FORMAT
    assert meta["model"]["vocab_size"] > 0 and meta["model"]["num_layers"] == 2
    assert os.path.exists(os.path.join(workdir, rundir.TOKENIZER))


@pytest.mark.slow
def test_a_copied_run_generates_serves_and_converts_without_data(gpt_run, no_data, tmp_path):
    workdir, cache = gpt_run
    expected = _greedy(workdir)
    copy = str(tmp_path / "copied")
    shutil.copytree(workdir, copy)
    shutil.rmtree(cache)  # the cache the run was prepared in is gone
    text = _greedy(copy)
    assert text == expected and len(text) > 0

    httpx = pytest.importorskip("httpx")
    from lmjax.serve.app import create_app
    from lmjax.serve.local import serve_in_thread

    loaded = load(copy)
    api = create_app(Generator(loaded.model, loaded.params, loaded.tokenizer), source=copy)
    with serve_in_thread(api) as url:
        r = httpx.post(f"{url}/v1/generate", json={"prompt": "ROMEO:", "max_new_tokens": 12},
                       timeout=120)
    assert r.status_code == 200 and r.json()["text"] == text  # greedy: the same continuation

    pytest.importorskip("safetensors")
    to_hf(copy, str(tmp_path / "hf"))
    assert json.load(open(tmp_path / "hf" / "config.json"))["architectures"] == [
        "GPT2LMHeadModel"]
    assert os.listdir(no_data) == []  # nothing was prepared either


@pytest.mark.slow
def test_a_copied_classifier_classifies_without_data(load_config, data_cache, tmp_path,
                                                     monkeypatch):
    from lmjax.infer.classify import TextClassifier

    cfg = load_config("tiny", "classify.py")
    cfg.data.cache_dir = data_cache
    cfg.mesh.host_cpu_devices = 0
    workdir = str(tmp_path / "classifier")
    write_run(cfg, workdir, log=lambda s: None)
    copy = str(tmp_path / "copied")
    shutil.copytree(workdir, copy)
    monkeypatch.setattr(corpora, "load_corpus", lambda *a: pytest.fail("corpus read"))
    monkeypatch.setattr(text_classification, "load", lambda *a: pytest.fail("data read"))
    loaded = load(copy, needs=(TEXT_CLASSES,))
    out = TextClassifier.from_loaded(loaded).classify(["To be, or not."])
    assert set(out[0]["probabilities"]) == {"comedy", "history", "tragedy", "poem"}
    assert sum(out[0]["probabilities"].values()) == pytest.approx(1.0, abs=1e-5)


@pytest.mark.slow
def test_a_run_without_assets_is_upgraded_on_load(gpt_run, tmp_path):
    workdir, _ = gpt_run
    old = str(tmp_path / "old")
    shutil.copytree(workdir, old)
    os.remove(os.path.join(old, rundir.META))
    os.remove(os.path.join(old, rundir.TOKENIZER))
    lines = []
    loaded = load(old, log=lines.append)
    assert any("predates run directories" in line for line in lines)
    assert rundir.exists(old) and os.path.exists(os.path.join(old, rundir.TOKENIZER))
    assert loaded.tokenizer.vocab_size == load(workdir).tokenizer.vocab_size
    assert _greedy(old) == _greedy(workdir)


def test_a_directory_that_is_not_a_run_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="not a run directory|No checkpoints"):
        load(str(tmp_path))
    (tmp_path / "quantized.json").write_text("{}")
    with pytest.raises(CheckpointError, match="export it again"):
        load(str(tmp_path))


@pytest.mark.slow
def test_a_fixed_tokenizer_file_keys_the_cache_by_its_contents(gpt_run, load_config, tmp_path):
    """data.tokenizer_file: the data are encoded with that file (nothing trained), and two
    files with different contents never share a cache folder."""
    from lmjax.data.prepare import prepare

    workdir, _ = gpt_run
    cfg = load_config("tiny").data
    cfg.cache_dir = str(tmp_path / "cache")
    cfg.tokenizer_file = os.path.join(workdir, rundir.TOKENIZER)
    first = prepare(cfg, log=lambda s: None)
    run_tokenizer = load(workdir).tokenizer
    assert first.tokenizer.chars == run_tokenizer.chars
    np.testing.assert_array_equal(first.train[:200],
                                  run_tokenizer.encode(corpora.load_corpus(cfg).train[0][:200]))
    other = tmp_path / "other.json"
    spec = json.load(open(cfg.tokenizer_file))
    other.write_text(json.dumps({**spec, "chars": spec["chars"][:-1]}))
    cfg.tokenizer_file = str(other)
    second = prepare(cfg, log=lambda s: None)
    assert second.directory != first.directory
    assert not [p for p in os.listdir(cfg.cache_dir) if p.startswith(".tmp")]


@pytest.mark.slow
def test_a_run_written_by_an_earlier_lmjax_loads(gpt_run, tmp_path):
    """Its checkpoint stores the config under the old names (train.eval_windows, data.kfold)
    and it has no run.json: it loads, and is upgraded."""
    from lmjax.checkpoint import Checkpointer
    from lmjax.train.restore import load_setup

    workdir, _ = gpt_run
    s, state = load_setup(workdir)
    old = s.cfg.to_dict()
    old["train"]["eval_windows"] = old["train"].pop("eval_examples")
    old["train"]["final_eval_windows"] = old["train"].pop("final_eval_examples")
    old["data"]["kfold"], old["data"]["fold"] = 0, 0
    del old["data"]["num_folds"], old["data"]["tokenizer_file"], old["compilation_cache"]
    del old["train"]["loss_chunk"]
    path = str(tmp_path / "old")
    with Checkpointer(os.path.join(path, "checkpoints")) as ckpt:
        ckpt.save(0, state, old, force=True)
    s2, _ = load_setup(path)
    assert s2.cfg.train.eval_examples == s.cfg.train.eval_examples
    assert s2.cfg.data.num_folds == 0 and s2.cfg.data.fold == -1
    assert rundir.exists(path)
    assert _greedy(path) == _greedy(workdir)
