"""Reading token shards: llm.c's .bin format, nanoGPT's headerless .bin, windows across shards."""

import json

import ml_collections
import numpy as np
import pytest

from lmjax.data import batches, shards
from lmjax.data.prepare import prepare


def write_llmc(path, tokens, version=1):
    """Exactly llm.c's dev/data/data_common.py:write_datafile (kept independent of lmjax)."""
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, version, len(tokens)
    dtype = np.uint16 if version == 1 else np.uint32
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype).tobytes())


def _cfg(**kw):
    c = ml_collections.ConfigDict(dict(
        name="shards", shards="", val_shards="", max_val_tokens=0, tokenizer="char",
        vocab_size=0, tokenizer_file="", cache_dir=""))
    c.update(kw)
    return c


@pytest.fixture
def llmc(tmp_path):
    rng = np.random.default_rng(0)
    parts = [rng.integers(0, 50257, n) for n in (1000, 37, 2500)]
    for i, part in enumerate(parts):
        write_llmc(tmp_path / f"fineweb_train_{i:06d}.bin", part)
    val = rng.integers(0, 50257, 700)
    write_llmc(tmp_path / "fineweb_val_000000.bin", val)
    return tmp_path, np.concatenate(parts), val


@pytest.mark.parametrize("dtype", [np.uint16, np.uint32])
def test_prepared_shards_equal_llmc_files_of_the_concatenated_documents(tmp_path, dtype):
    # The preparation's writer fills each shard in place; the reference is what it did before:
    # each split's kept documents concatenated in order, cut every `size` tokens, each piece
    # written as llm.c writes a shard. The files must be the same bytes.
    import hashlib

    from lmjax.data import pipeline

    rng = np.random.default_rng(0)
    size, top = 1000, np.iinfo(dtype).max
    docs = [rng.integers(0, top, n, endpoint=True).astype(dtype)
            for n in rng.integers(1, 2500, 90)]  # some longer than a shard
    is_val, kept = rng.random(90) < 0.3, rng.random(90) < 0.9
    writer = pipeline._Writer(str(tmp_path), size, dtype, {}, {})
    for part in np.array_split(np.arange(90), 4):  # tokenized chunks, as the workers send them
        lengths = np.array([len(docs[i]) if kept[i] else 0 for i in part])
        pipeline._write({"split": is_val[part].astype(np.uint8), "kept": kept[part],
                         "lengths": lengths,
                         "tokens": np.concatenate([docs[i] for i in part if kept[i]])}, writer)
    writer.finish({})
    manifest = shards.read_manifest(str(tmp_path))
    for split, side in (("train", ~is_val), ("val", is_val)):
        whole = np.concatenate([docs[i] for i in np.flatnonzero(side & kept)])
        pieces = [whole[i:i + size] for i in range(0, len(whole), size)]
        records = [r for r in manifest["shards"] if r["split"] == split]
        assert [r["file"] for r in records] == [f"{split}_{i:06d}.bin" for i in range(len(pieces))]
        for piece, record in zip(pieces, records):
            write_llmc(tmp_path / "ref.bin", piece, version=1 if dtype == np.uint16 else 2)
            want = (tmp_path / "ref.bin").read_bytes()
            assert (tmp_path / record["file"]).read_bytes() == want
            assert record["sha256"] == hashlib.sha256(want).hexdigest()
            assert record["tokens"] == len(piece)


def test_llmc_shards_read_as_one_sequence(llmc):
    root, whole, val = llmc
    data = prepare(_cfg(shards=str(root / "fineweb_train_*.bin")), log=lambda s: None)
    assert len(data.train) == len(whole) and data.meta["train_shards"] == 3
    assert data.meta["val_names"] == ["fineweb_val_000000.bin"]  # found by 'train' -> 'val'
    idx = np.random.default_rng(1).integers(0, len(whole), (5, 40))
    np.testing.assert_array_equal(data.train[idx], whole[idx])
    np.testing.assert_array_equal(data.val[np.arange(700)], val)
    assert data.tokenizer.vocab_size == shards.GPT2_VOCAB  # ids only: GPT-2's vocabulary
    assert data.tokenizer.decode([464, 3290]) == "464 3290"
    np.testing.assert_array_equal(data.tokenizer.encode("464 3290"), [464, 3290])


def test_batches_from_shards_equal_batches_from_the_concatenated_array(llmc):
    root, whole, _ = llmc
    tokens = shards.open_tokens(sorted(str(p) for p in root.glob("fineweb_train_*.bin")))
    for step in (0, 7):  # windows cross shard boundaries; the rows split across 2 processes
        ref = batches.train_batch(whole, 3, step, 64, 128)
        got = [batches.train_batch(tokens, 3, step, 64, 128, p, 2) for p in (0, 1)]
        for key in ("inputs", "targets"):
            np.testing.assert_array_equal(np.concatenate([g[key] for g in got]), ref[key])


def test_nanogpt_bins_and_bounded_validation(tmp_path):
    train = np.arange(5000) % 50257
    train.astype(np.uint16).tofile(tmp_path / "train.bin")
    (np.arange(3000) % 97).astype(np.uint16).tofile(tmp_path / "val.bin")
    data = prepare(_cfg(shards=str(tmp_path / "train.bin"), max_val_tokens=1000),
                   log=lambda s: None)
    assert len(data.train) == 5000 and len(data.val) == 1000
    np.testing.assert_array_equal(data.train[np.array([0, 4999])], [0, 4999])
    starts = batches.eval_starts(len(data.val), 32)
    assert len(starts) == 31  # fixed, non-overlapping windows in the first 1000 tokens


def test_uint32_shards_need_a_vocabulary(tmp_path):
    write_llmc(tmp_path / "a_train.bin", np.arange(100_000, 100_500), version=2)
    write_llmc(tmp_path / "a_val.bin", np.arange(100_000, 100_100), version=2)
    with pytest.raises(shards.ShardError, match="data.vocab_size"):
        prepare(_cfg(shards=str(tmp_path / "a_train.bin")), log=lambda s: None)
    with pytest.raises(shards.ShardError, match="beyond the vocabulary of 1000"):
        prepare(_cfg(shards=str(tmp_path / "a_train.bin"), vocab_size=1000), log=lambda s: None)
    data = prepare(_cfg(shards=str(tmp_path / "a_train.bin"), vocab_size=128_256),
                   log=lambda s: None)
    assert data.train.dtype == np.uint32 and int(data.train[np.array([499])][0]) == 100_499


def test_bad_shards_are_named(tmp_path):
    write_llmc(tmp_path / "x_train.bin", np.arange(100))
    with open(tmp_path / "x_train.bin", "ab") as f:
        f.truncate(1024 + 150)  # half the tokens missing
    (tmp_path / "x_val.bin").write_bytes(b"abc")
    with pytest.raises(shards.ShardError, match="truncated"):
        shards.open_shard(str(tmp_path / "x_train.bin"))
    with pytest.raises(shards.ShardError, match="size is odd"):
        shards.open_shard(str(tmp_path / "x_val.bin"))
    with pytest.raises(shards.ShardError, match="no file matches"):
        prepare(_cfg(shards=str(tmp_path / "nope_train*.bin")), log=lambda s: None)
    with pytest.raises(shards.ShardError, match="val_shards"):
        prepare(_cfg(shards=str(tmp_path / "x_*.bin")), log=lambda s: None)


def test_the_lm_task_reads_shards_with_a_tokenizer_file(tiny_config, tmp_path):
    from lmjax.tasks import make_task

    rng = np.random.default_rng(0)
    train = [rng.integers(0, 512, n) for n in (3000, 900)]
    for i, part in enumerate(train):
        write_llmc(tmp_path / f"c_train_{i:06d}.bin", part)
    val = rng.integers(0, 512, 500)
    write_llmc(tmp_path / "c_val_000000.bin", val)
    # A word-level tokenizer.json standing in for GPT-2's: 'w<i>' is id i.
    spec = shards.ids_tokenizer_json(512)
    spec["model"]["vocab"] = {f"w{i}": i for i in range(512)}
    spec["model"]["unk_token"] = "w0"
    (tmp_path / "tok.json").write_text(json.dumps(spec))
    cfg = tiny_config
    cfg.data.update(name="shards", shards=str(tmp_path / "c_train_*.bin"),
                    tokenizer_file=str(tmp_path / "tok.json"), max_val_tokens=300)
    task = make_task(cfg, log=lambda s: None)
    assert task.model.cfg.vocab_size == 512 and "3,900 training and 300 validation" in \
        task.describe()
    ref = batches.train_batch(np.concatenate(train), cfg.seed, 5, cfg.train.batch_size, 32, 1, 2)
    got = task.train_batch(5, 1, 2)
    np.testing.assert_array_equal(got["inputs"], ref["inputs"])
    first = next(iter(task.eval_batches(4)))
    np.testing.assert_array_equal(first["inputs"][1], val[32:64])
    assert task.tokenizer.decode(got["inputs"][0][:2]) == " ".join(
        f"w{i}" for i in got["inputs"][0][:2])
