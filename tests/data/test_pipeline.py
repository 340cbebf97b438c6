"""Parallel, sharded, resumable preparation (data.name='stream'): content, dedup across the
train/validation boundary, and resuming after kill -9."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from lmjax.config import text_data
from lmjax.data import corpora, pipeline, shards
from lmjax.data.prepare import prepare
from lmjax.data.tokenizers import load_tokenizer_file

pytest.importorskip("datasketch")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _corpus(path, n=400, near=40, exact=20):
    rng = np.random.default_rng(0)
    vocab = [f"w{i}" for i in range(3000)]
    unique = [" ".join(rng.choice(vocab, 120)) for _ in range(n)]
    near_dups = []
    for text in unique[:near]:
        words = text.split()
        words[::40] = ["changed"] * len(words[::40])  # Jaccard on 5-grams about 0.85
        near_dups.append(" ".join(words))
    docs = unique + near_dups + unique[near:near + exact]
    with open(path, "w") as f:
        for i, t in enumerate(docs):
            f.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    return unique


def _cfg(files, root, **kw):
    return text_data(name="stream", files=str(files), cache_dir=str(root), tokenizer="bpe",
                     vocab_size=400, shard_tokens=20_000, chunk_bytes=20_000, num_workers=1,
                     val_fraction=0.2, **kw)


def _docs(folder, split):
    """The documents of a split, decoded back from the shards."""
    tok = load_tokenizer_file(os.path.join(folder, "tokenizer.json"))
    manifest = shards.read_manifest(folder)
    tokens = np.concatenate([shards.open_shard(os.path.join(folder, r["file"]))
                             for r in manifest["shards"] if r["split"] == split])
    cuts = np.flatnonzero(tokens == tok.eot_id)
    return [tok.decode(tokens[a + 1:b]) for a, b in zip(np.r_[-1, cuts[:-1]], cuts)]


def _shingles(text):
    w = text.split()
    return {tuple(w[i:i + 5]) for i in range(len(w) - 4)}


def test_shards_hold_the_kept_documents_and_no_val_document_has_a_near_duplicate_in_train(
        tmp_path):
    unique = _corpus(tmp_path / "c.jsonl")
    data = prepare(_cfg(tmp_path / "c.jsonl", tmp_path / "cache"), log=lambda s: None)
    folder = data.directory
    report = json.load(open(os.path.join(folder, "report.json")))
    assert report["documents"] == 460 and report["exact_duplicate"] == 20
    assert report["near_duplicate"] >= 36 and report["kept"] >= 400
    manifest = shards.read_manifest(folder)
    assert manifest["complete"] and not os.path.exists(os.path.join(folder, pipeline.WORK))
    for r in manifest["shards"]:
        assert shards.file_sha256(os.path.join(folder, r["file"])) == r["sha256"]
    train_sizes = [r["tokens"] for r in manifest["shards"] if r["split"] == "train"]
    assert len(train_sizes) > 2 and set(train_sizes[:-1]) == {20_000}  # fixed-size shards
    train, val = _docs(folder, "train"), _docs(folder, "val")
    # Every unique document is kept whole, on the side its id decides.
    for i, text in enumerate(unique):
        side = corpora.split_of(f"{tmp_path / 'c.jsonl'}:d{i}", 0.2)
        assert text in (val if side == "val" else train)
    assert 40 < len(val) < 120
    train_sets = [_shingles(t) for t in train]
    for text in val:  # the planted pairs straddle the boundary; none survives
        v = _shingles(text)
        assert max(len(v & t) / len(v | t) for t in train_sets) < 0.8
    assert len(data.train) == sum(train_sizes)
    with open(os.path.join(folder, "removed.tsv")) as f:
        removed = dict(line.rstrip("\n").rsplit("\t", 1) for line in f)
    assert len(removed) == 60 - (report["kept"] - 400)
    assert {removed[f"{tmp_path / 'c.jsonl'}:d{i}"] for i in range(440, 460)} == \
        {"exact_duplicate"}
    # A run evaluated later re-reads its data with its own copy of the tokenizer: same folder.
    again = _cfg(tmp_path / "c.jsonl", tmp_path / "cache",
                 tokenizer_file=os.path.join(folder, "tokenizer.json"))
    assert pipeline.prepare_stream(again, str(tmp_path / "cache"), log=print) == folder


@pytest.mark.slow
def test_prepare_data_command(tmp_path, run_module):
    _corpus(tmp_path / "c.jsonl", n=100, near=10, exact=5)
    r = run_module("prepare_data", "--config=configs/gpt.py:tiny",
                   "--config.data.name=stream", f"--config.data.files={tmp_path / 'c.jsonl'}",
                   f"--config.data.cache_dir={tmp_path}", "--config.data.num_workers=1",
                   "--config.data.val_fraction=0.3")
    assert r.returncode == 0, r.stderr
    assert re.search(r"^exact_duplicate +5$", r.stdout, re.M) and "shards: " in r.stdout
    folder = r.stdout.split("shards: ")[1].split()[0]
    assert shards.read_manifest(folder)["complete"]


SLOW_WRITER = """
import json, sys, time
from lmjax.config import text_data
from lmjax.data import pipeline

write = pipeline._Writer._shard
def slow(self, split, tokens):  # time for the test to kill us between shards
    write(self, split, tokens)
    time.sleep(0.5)
pipeline._Writer._shard = slow

if __name__ == "__main__":
    pipeline.prepare_stream(text_data(**json.loads(sys.argv[1])), sys.argv[2])
"""


@pytest.mark.slow
def test_kill_9_then_rerun_redoes_only_unfinished_shards(tmp_path):
    _corpus(tmp_path / "c.jsonl")
    cfg = _cfg(tmp_path / "c.jsonl", tmp_path / "ref")
    reference = shards.read_manifest(pipeline.prepare_stream(cfg, str(tmp_path / "ref"),
                                                             log=lambda s: None))
    (tmp_path / "slow.py").write_text(SLOW_WRITER)
    fields = dict(cfg.to_dict(), num_workers=2)
    proc = subprocess.Popen([sys.executable, str(tmp_path / "slow.py"), json.dumps(fields),
                             str(tmp_path / "cache")], cwd=ROOT, start_new_session=True,
                            env=dict(os.environ, PYTHONPATH=ROOT))
    folder = pipeline.folder_for(cfg, str(tmp_path / "cache"))
    deadline = time.time() + 120
    while time.time() < deadline:
        manifest = shards.read_manifest(folder)
        if manifest and len(manifest["shards"]) >= 2:
            break
        assert proc.poll() is None, "the preparation ended before it could be interrupted"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # the main process and its workers
    proc.wait()
    done = shards.read_manifest(folder)["shards"]
    assert not shards.read_manifest(folder)["complete"] and len(done) < len(reference["shards"])
    stamps = {r["file"]: os.stat(os.path.join(folder, r["file"])).st_mtime_ns for r in done}
    messages = []
    pipeline.prepare_stream(cfg, str(tmp_path / "cache"), log=messages.append)
    assert f"resuming: {len(done)} shards done" in messages[0]
    for name, stamp in stamps.items():  # finished shards were not written again
        assert os.stat(os.path.join(folder, name)).st_mtime_ns == stamp
    final = shards.read_manifest(folder)
    assert final["complete"]
    assert [(r["file"], r["sha256"]) for r in final["shards"]] == \
        [(r["file"], r["sha256"]) for r in reference["shards"]]  # as if never interrupted


HEAVY_MAIN = """
import json, sys
print("main module imported", file=sys.stderr, flush=True)  # what a worker must not do
from lmjax.config import text_data
from lmjax.data import pipeline

if __name__ == "__main__":
    pipeline.prepare_stream(text_data(**json.loads(sys.argv[1])), sys.argv[2])
"""


@pytest.mark.slow
def test_no_worker_imports_the_main_module(tmp_path):
    # Spawned workers would import the command's __main__ again (JAX, hundreds of MB each);
    # every one of them, not only the first, must start while it is hidden.
    _corpus(tmp_path / "c.jsonl")
    (tmp_path / "main.py").write_text(HEAVY_MAIN)
    fields = dict(_cfg(tmp_path / "c.jsonl", tmp_path / "cache").to_dict(), num_workers=2,
                  chunk_bytes=5_000)
    r = subprocess.run([sys.executable, str(tmp_path / "main.py"), json.dumps(fields),
                        str(tmp_path / "cache")], cwd=ROOT, capture_output=True, text=True,
                       env=dict(os.environ, PYTHONPATH=ROOT), timeout=240)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("main module imported") == 1, r.stderr


def test_an_empty_split_is_refused_and_never_marked_complete(tmp_path):
    _corpus(tmp_path / "c.jsonl", n=3, near=0, exact=0)
    cfg = _cfg(tmp_path / "c.jsonl", tmp_path / "cache", tokenizer_sample_bytes=10_000)
    cfg.val_fraction = 0.001
    with pytest.raises(ValueError, match="the validation split is empty"):
        pipeline.prepare_stream(cfg, str(tmp_path / "cache"), log=lambda s: None)
    assert not (shards.read_manifest(pipeline.folder_for(cfg, str(tmp_path / "cache"))) or
                {}).get("complete")


def test_dedup_none_keeps_every_copy(tmp_path):
    _corpus(tmp_path / "c.jsonl", n=60, near=10, exact=10)
    cfg = _cfg(tmp_path / "c.jsonl", tmp_path / "all")
    cfg.clean.dedup = "none"
    report = json.load(open(os.path.join(prepare(cfg, log=lambda s: None).directory,
                                         "report.json")))
    assert report["kept"] == report["documents"] == 80 and report["exact_duplicate"] == 0
    deduped = json.load(open(os.path.join(prepare(_cfg(tmp_path / "c.jsonl", tmp_path / "d"),
                                                  log=lambda s: None).directory, "report.json")))
    assert deduped["exact_duplicate"] == 10
    assert deduped["near_duplicate"] + deduped["near_duplicate_across_splits"] >= 8
