"""Parallel, sharded, resumable preparation of a streamed corpus (`data.name='stream'`).

    sources (main process, streaming) -> chunks of ~data.chunk_bytes of text
    -> worker processes (data.num_workers): normalise, quality rules, exact hash, MinHash band
       keys (cheap: ~15% of tokenizing)
    -> main process, in document order: deduplicate
    -> worker processes: tokenize the kept documents only (duplicates cost no tokenizing);
       each chunk's result saved atomically under .work/
    -> main process, in document order: fill the train/val buffers, write shards of
       data.shard_tokens tokens (llm.c's .bin format) atomically, list them in manifest.json

Killed at any point (even kill -9), the same command continues: chunks already in .work/ are
not tokenized again (their saved keys replay the dedup decisions), shards already in the
manifest are not written again, and the result is byte-identical to an uninterrupted run's.
Memory is bounded by the chunks in flight (about three per worker) and the two shard buffers
(filled in place: data.shard_tokens tokens of 2 bytes each for uint16), with only the dedup
index growing with the corpus (0.25 KB a document); docs/data.md has what was measured.
"""

from __future__ import annotations

import collections
import contextlib
from concurrent import futures
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
import types

import numpy as np

from lmjax.data import clean, corpora, shards
from lmjax.config import require
from lmjax.data.tokenizers import KINDS, load_tokenizer_file

WORK = ".work"
_STATE: dict = {}  # a worker's tokenizer, hasher and rules (set by _init)


def settings(cfg) -> dict:
    """Everything that decides the output (the manifest keeps it; the folder is named by it)."""
    c = cfg.clean
    out = {"files": [_stat(p) for p in corpora.expand(cfg.files)], "text_key": cfg.text_key,
           "val_fraction": cfg.val_fraction, "tokenizer": cfg.tokenizer,
           "vocab_size": cfg.vocab_size, "tokenizer_sample_bytes": cfg.tokenizer_sample_bytes,
           "tokenizer_file": _digest(cfg.tokenizer_file) if cfg.tokenizer_file else "",
           "shard_tokens": cfg.shard_tokens, "chunk_bytes": cfg.chunk_bytes,
           "clean": c.to_dict(), "version": 2}
    return out


def _stat(path: str) -> list:
    paths = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in sorted(fs)] \
        if os.path.isdir(path) else [path]
    return [[os.path.abspath(p), os.path.getsize(p), os.stat(p).st_mtime_ns] for p in paths]


def _digest(path: str) -> str:
    files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in sorted(fs)] \
        if os.path.isdir(path) else [path]
    h = hashlib.sha256()
    for p in files:
        with open(p, "rb") as f:
            h.update(f.read())
    return h.hexdigest()


def folder_for(cfg, root: str) -> str:
    key = hashlib.sha256(json.dumps(settings(cfg), sort_keys=True).encode()).hexdigest()[:16]
    return os.path.join(root, f"stream-{key}")


def _trained_twin(cfg, root: str) -> str:
    """A finished folder whose trained tokenizer is exactly data.tokenizer_file, or ''. A run
    evaluated later re-reads its data with its own copy of that tokenizer: the same data."""
    if not cfg.get("tokenizer_file", ""):
        return ""
    trained = cfg.copy_and_resolve_references()
    with trained.unlocked():
        trained.tokenizer_file = ""
    folder = folder_for(trained, root)
    manifest = shards.read_manifest(folder)
    if manifest and manifest.get("complete") and os.path.isfile(cfg.tokenizer_file) and \
            _digest(os.path.join(folder, "tokenizer.json")) == _digest(cfg.tokenizer_file):
        return folder
    return ""


def prepare_stream(cfg, root: str, log=print) -> str:
    """Prepares (or finishes preparing) the corpus of `cfg` (a `data` section) under `root`;
    returns the folder of shards, tokenizer.json, manifest.json, report.json (counts per rule)
    and removed.tsv (each removed document's id and rule)."""
    folder = _trained_twin(cfg, root) or folder_for(cfg, root)
    manifest = shards.read_manifest(folder)
    if manifest and manifest.get("complete"):
        return folder
    os.makedirs(os.path.join(folder, WORK), exist_ok=True)
    done = {r["file"]: r for r in (manifest or {}).get("shards", [])}
    log(f"Preparing {cfg.files!r} into {folder}" +
        (f" (resuming: {len(done)} shards done)" if manifest else "") + " ...")
    tok_path = _tokenizer(cfg, folder, log)
    tokenizer = load_tokenizer_file(tok_path)
    dtype = np.uint16 if tokenizer.vocab_size <= 1 << 16 else np.uint32
    near = cfg.clean.dedup == "near"
    bands, rows = clean.lsh_params(cfg.clean.near_threshold, cfg.clean.num_perm) if near \
        else (0, 0)
    writer = _Writer(folder, cfg.shard_tokens, dtype, done, settings(cfg))
    dedup = clean.Deduper(near, bands) if cfg.clean.dedup != "none" else None
    report = collections.Counter({k: 0 for k in (
        "characters", "documents", *clean.RULES, "exact_duplicate", "near_duplicate",
        "near_duplicate_across_splits", "kept")})
    workers = cfg.num_workers or os.cpu_count() or 1
    init = (tok_path, cfg.clean.to_dict(), cfg.clean.num_perm, bands, rows, dtype, workers > 1)
    start = time.perf_counter()
    # spawn, not fork: the parent may run JAX's threads, and the tokenizer's thread pool does
    # not survive a fork. An executor (not a Pool) fails when a worker dies instead of hanging.
    pool = None
    if workers > 1:
        with _bare_main():
            pool = futures.ProcessPoolExecutor(workers, multiprocessing.get_context("spawn"),
                                               _init, init)
            # A spawning executor starts one worker per submit while none is idle (3.11+): one
            # task per worker starts them all now, while __main__ is hidden, not later.
            for started in [pool.submit(int) for _ in range(workers)]:
                started.result()
    else:
        _init(*init)
    removed = open(os.path.join(folder, WORK, "removed.tsv"), "w")  # rewritten on a resume
    submit = pool.submit if pool is not None else lambda f, *a: _Ready(f(*a))
    inspecting, tokenizing = collections.deque(), collections.deque()

    def advance(limit: int) -> None:
        """Decides the oldest inspected chunks (in document order) and sends their kept
        documents to be tokenized; writes tokenized chunks, in order, beyond `limit`."""
        while len(inspecting) > limit:
            path, chunk, inspected = inspecting.popleft()
            info = inspected.result()
            kept = _decide([d for d, _, _ in chunk], info, dedup, report, removed)
            if "tokens" in info:  # saved before an interruption
                tokenizing.append(_Ready(info))
            else:
                tokenizing.append(submit(_tokenize, path, info, kept,
                                         [chunk[i][1] for i in np.flatnonzero(kept)]))
        while len(tokenizing) > limit:
            _write(tokenizing.popleft().result(), writer)

    try:
        docs = corpora.documents(cfg.files, cfg.text_key, cfg.val_fraction)
        for index, chunk in enumerate(_chunks(docs, cfg.chunk_bytes)):
            path = os.path.join(folder, WORK, f"chunk-{index:06d}.npz")
            report["characters"] += sum(len(t) for _, t, _ in chunk)
            saved = _load(path, len(chunk))
            inspecting.append((path, chunk, _Ready(saved) if saved else submit(_inspect, chunk)))
            advance(workers)  # back-pressure: bounded text in flight
        advance(0)
    finally:
        removed.close()
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
    empty = [s for s in ("train", "val") if not writer.counts[s] and not writer.pending[s]]
    if empty:  # checked before the manifest says complete: nothing unusable is ever finished
        raise ValueError(f"data.files={cfg.files!r}: after cleaning, the "
                         f"{'validation' if 'val' in empty else 'training'} split is empty "
                         f"({dict(report)}); give more documents or change data.val_fraction "
                         "(documents are split whole, by a hash of their id) or data.clean.")
    report = dict(report, seconds=round(time.perf_counter() - start, 2))
    os.replace(os.path.join(folder, WORK, "removed.tsv"), os.path.join(folder, "removed.tsv"))
    writer.finish(report)
    shutil.rmtree(os.path.join(folder, WORK), ignore_errors=True)
    log("Prepared: " + ", ".join(f"{k} {v:,}" for k, v in report.items()))
    return folder


@contextlib.contextmanager
def _bare_main():
    """Spawned workers import the parent's __main__ again (a command that loads JAX: ~300 MB
    and seconds per worker; a script from stdin: an error). They need only this module, so
    __main__'s name and file are hidden while they start."""
    main = sys.modules["__main__"]
    saved = {k: main.__dict__[k] for k in ("__spec__", "__file__") if k in main.__dict__}
    main.__spec__ = None
    main.__dict__.pop("__file__", None)
    try:
        yield
    finally:
        main.__dict__.update(saved)


def _tokenizer(cfg, folder: str, log) -> str:
    """tokenizer.json in the folder: copied from data.tokenizer_file, or trained on the first
    data.tokenizer_sample_bytes of normalised training text (kept across a resume)."""
    path = os.path.join(folder, "tokenizer.json")
    if os.path.exists(path):
        return path
    if cfg.tokenizer_file:
        tokenizer = load_tokenizer_file(cfg.tokenizer_file)
    else:
        log(f"Training a {cfg.tokenizer} tokenizer on up to {cfg.tokenizer_sample_bytes:,} "
            "bytes of training text ...")

        def sample():
            seen = 0
            for _, text, split in corpora.documents(cfg.files, cfg.text_key, cfg.val_fraction):
                if split == "train":
                    text = clean.normalize(text) if cfg.clean.normalize else text
                    yield text
                    seen += len(text)
                    if seen >= cfg.tokenizer_sample_bytes:
                        return

        tokenizer = KINDS[cfg.tokenizer].train(sample(), cfg.vocab_size)
    tmp = os.path.join(folder, WORK, "tokenizer")
    os.makedirs(tmp, exist_ok=True)
    tokenizer.save(tmp)
    os.replace(os.path.join(tmp, "tokenizer.json"), path)
    return path


def _chunks(docs, chunk_bytes: int):
    chunk, size = [], 0
    for doc in docs:
        chunk.append(doc)
        size += len(doc[1])
        if size >= chunk_bytes:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


class _Ready:
    def __init__(self, value):
        self.value = value

    def result(self):
        return self.value


def _init(tok_path: str, rules: dict, num_perm: int, bands: int, rows: int, dtype,
          one_thread: bool = False) -> None:
    """A worker's state: loaded once, not sent with every chunk. With several workers each
    tokenizes on one thread: the processes already fill the cores, and the tokenizer's own
    thread pool on top of them (a pool per worker) ran ~10% slower here."""
    if one_thread:
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    with open(tok_path) as f:
        kind = json.load(f).get("kind")
    if kind == "char":
        tok = load_tokenizer_file(tok_path)
        encode = lambda texts: [tok.encode(t) for t in texts]  # noqa: E731
        sep = tok.encode("\n")
    else:
        from tokenizers import Tokenizer  # noqa: lazy (only byte-level BPE / WordPiece)

        tok = Tokenizer.from_file(tok_path)
        encode = lambda texts: [e.ids for e in  # noqa: E731
                                tok.encode_batch(texts, add_special_tokens=False)]
        eot = next((tok.token_to_id(t) for t in ("<|endoftext|>", "[SEP]")
                    if tok.token_to_id(t) is not None), None)
        sep = [eot] if eot is not None else [e for e in tok.encode("\n").ids]
    _STATE.update(encode=encode, sep=np.asarray(sep, dtype), dtype=dtype,
                  rules=types.SimpleNamespace(**rules),
                  hasher=clean.MinHasher(num_perm, bands, rows) if bands else None)


def _inspect(chunk: list) -> dict:
    """Per document of a chunk: its split, the rule it breaks, its exact hash and its band keys
    (what the main process decides duplicates by, before anything is tokenized)."""
    s = _STATE
    c, hasher = s["rules"], s["hasher"]
    n = len(chunk)
    out = {"split": np.zeros(n, np.uint8), "reason": np.zeros(n, np.uint8),
           "exact": np.zeros((n, 2), np.uint64),
           "keys": np.zeros((n, hasher.num_keys if hasher else 0), np.uint64)}
    for i, (_, text, split) in enumerate(chunk):
        out["split"][i] = split == "val"
        if c.normalize:
            text = clean.normalize(text)
        words = clean.Words(text)
        rule = clean.quality(text, c, words)
        if rule:
            out["reason"][i] = 1 + clean.RULES.index(rule)
            continue
        key = clean.exact_key(text)
        out["exact"][i] = key >> 64, key & 0xFFFFFFFFFFFFFFFF
        if hasher:
            out["keys"][i] = hasher.keys(words)
    return out


def _tokenize(path: str, info: dict, kept: np.ndarray, texts: list[str]) -> dict:
    """The kept documents' tokens, each followed by the separator, with `info` and `kept`:
    saved to `path` atomically (a resumed run reads it instead of tokenizing again)."""
    s = _STATE
    if s["rules"].normalize:  # again: 5 ms a MB, less than sending the inspected text back
        texts = [clean.normalize(t) for t in texts]
    lengths = np.zeros(len(kept), np.int64)
    pieces = []
    for i, ids in zip(np.flatnonzero(kept), s["encode"](texts)):
        pieces += [np.asarray(ids, s["dtype"]), s["sep"]]
        lengths[i] = len(ids) + len(s["sep"])
    out = dict(info, kept=kept, lengths=lengths,
               tokens=np.concatenate(pieces) if pieces else np.zeros(0, s["dtype"]))
    tmp = f"{path}.tmp{os.getpid()}.npz"
    np.savez(tmp, **out)
    os.replace(tmp, path)
    return out


def _load(path: str, n: int) -> dict | None:
    """A chunk's saved result, when there is one for these `n` documents."""
    if not os.path.exists(path):
        return None
    with np.load(path) as f:
        out = dict(f)
    return out if len(out["split"]) == n else None


def _decide(ids: list, info: dict, dedup: clean.Deduper, report, removed) -> np.ndarray:
    """Which documents of an inspected chunk are kept, decided in document order; removed
    documents' ids (and why) go to removed.tsv."""
    kept = np.zeros(len(ids), bool)
    for i, (split, reason) in enumerate(zip(info["split"].tolist(), info["reason"].tolist())):
        report["documents"] += 1
        why = clean.RULES[reason - 1] if reason else ""
        if not why and dedup is not None:
            hi, lo = info["exact"][i].tolist()
            why = dedup.check(hi << 64 | lo, info["keys"][i], bool(split))
        if why:
            report[why] += 1
            removed.write(f"{ids[i]}\t{why}\n")
        else:
            report["kept"] += 1
            kept[i] = True
    if "kept" in info and not np.array_equal(kept, info["kept"]):
        raise RuntimeError(f"{removed.name}: a resumed preparation decided differently from "
                           "the interrupted one; delete the folder and prepare again.")
    return kept


def _write(result: dict, writer: "_Writer") -> None:
    """A tokenized chunk's kept documents into the split buffers, in document order."""
    ends = np.cumsum(result["lengths"])
    tokens = result["tokens"]
    for i in np.flatnonzero(result["kept"]):
        writer.add("val" if result["split"][i] else "train",
                   tokens[ends[i] - result["lengths"][i]:ends[i]])


class _Writer:
    """Two buffers (train, val) cut into shards of exactly `size` tokens (the last one of each
    split shorter); a shard already in the manifest is not written again.

    Each buffer is one preallocated array of `size` tokens in the shard's own type, filled in
    place as documents arrive and written as it is when full (as llm.c's writer does): 2 bytes
    a token for uint16, where a list of pieces concatenated, cast and copied into the file's
    bytes held about 9 (docs/data.md). The OS maps its pages in only as they are written."""

    def __init__(self, folder: str, size: int, dtype, done: dict, settings: dict):
        self.folder, self.size, self.dtype, self.done = folder, size, dtype, done
        self.settings = settings
        self.buffers: dict[str, np.ndarray | None] = {"train": None, "val": None}
        self.pending = {"train": 0, "val": 0}  # tokens in each buffer
        self.counts = {"train": 0, "val": 0}  # shards written per split
        self.records: list[dict] = []

    def add(self, split: str, tokens: np.ndarray) -> None:
        while len(tokens):
            if self.buffers[split] is None:  # a fresh one after each shard (pages on use)
                self.buffers[split] = np.empty(self.size, self.dtype)
            at = self.pending[split]
            n = min(len(tokens), self.size - at)
            self.buffers[split][at:at + n] = tokens[:n]
            self.pending[split], tokens = at + n, tokens[n:]
            if self.pending[split] == self.size:
                self._shard(split, self.buffers[split])
                self.buffers[split], self.pending[split] = None, 0

    def _shard(self, split: str, tokens: np.ndarray) -> None:
        name = f"{split}_{self.counts[split]:06d}.bin"
        path = os.path.join(self.folder, name)
        old = self.done.get(name)
        expected = 4 * shards.HEADER_INTS + len(tokens) * np.dtype(self.dtype).itemsize
        if old and old["tokens"] == len(tokens) and os.path.exists(path) \
                and os.path.getsize(path) == expected:
            record = old  # finished before an interruption: not written again
        else:
            record = {"file": name, "split": split, "tokens": int(len(tokens)),
                      "sha256": shards.write_shard(path, tokens)}
        self.records.append(record)
        self.counts[split] += 1
        self._manifest(False)

    def finish(self, report: dict) -> None:
        for split in ("train", "val"):
            if self.pending[split]:
                self._shard(split, self.buffers[split][:self.pending[split]])
        report["train_tokens"] = sum(r["tokens"] for r in self.records if r["split"] == "train")
        report["val_tokens"] = sum(r["tokens"] for r in self.records if r["split"] == "val")
        _write_json(os.path.join(self.folder, "report.json"), report)
        self._manifest(True)

    def _manifest(self, complete: bool) -> None:
        _write_json(os.path.join(self.folder, shards.MANIFEST),
                    {"complete": complete, "dtype": np.dtype(self.dtype).name,
                     "shard_tokens": self.size, "shards": self.records + [
                         r for name, r in self.done.items()  # until replayed, keep them
                         if not complete and name not in {x["file"] for x in self.records}],
                     "settings": self.settings})


def _write_json(path: str, obj) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=1)
    os.replace(tmp, path)


def load_stream(cfg, log=print) -> dict:
    """`data.name='stream'` (lmjax/data/sources.py): the corpus prepared into shards once (and
    continued where an interrupted preparation stopped), then read like any shards."""
    from lmjax.data.prepare import default_cache_dir  # noqa: lazy, start-up (import order)

    folder = prepare_stream(cfg, cfg.cache_dir or default_cache_dir(), log)
    return shards.load(cfg, log, folder)


def check(d) -> None:
    """The `data` fields a streamed corpus needs."""
    c = d.clean
    require(d.num_workers >= 0, f"data.num_workers={d.num_workers}: >= 0 (0: one per core).")
    require(d.shard_tokens > 0 and d.chunk_bytes > 0 and d.tokenizer_sample_bytes > 0,
            "data.shard_tokens, data.chunk_bytes and data.tokenizer_sample_bytes must be "
            "positive.")
    require(c.dedup in ("none", "exact", "near"),
            f"data.clean.dedup={c.dedup!r}: use 'none', 'exact' or 'near'.")
    require(0.0 < c.near_threshold < 1.0 and c.num_perm >= 16,
            f"data.clean.near_threshold={c.near_threshold} must be in (0, 1) and "
            f"data.clean.num_perm={c.num_perm} at least 16.")
    require(0 <= c.min_words <= c.max_words and
            c.min_mean_word_length <= c.max_mean_word_length,
            "data.clean: min_words <= max_words and min_mean_word_length <= "
            "max_mean_word_length.")
