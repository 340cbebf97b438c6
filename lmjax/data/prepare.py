"""Tokenize a corpus once, cache the token arrays on disk and memory-map them on every later run."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass

import ml_collections
import numpy as np

from lmjax.data import corpora, sources
from lmjax.data.tokenizers import KINDS, load_tokenizer, load_tokenizer_file


@dataclass
class Prepared:
    train: np.ndarray  # 1-D token ids, memory-mapped
    val: np.ndarray
    tokenizer: object
    directory: str
    meta: dict
    train_doc_lengths: np.ndarray | None = None  # tokens of each training document (with its
    #                                              separator), in order; None for token shards


def default_cache_dir() -> str:
    base = os.environ.get("LMJAX_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "lmjax")
    return os.path.join(base, "data")


def _encode_docs(tokenizer, docs: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(token ids, each document's length): documents separated by the tokenizer's
    end-of-text token, or by a newline for characters."""
    eot = getattr(tokenizer, "eot_id", None)
    pieces = []
    for doc in docs:
        pieces.append(tokenizer.encode(doc))
        pieces.append(np.array([eot], np.int32) if eot is not None else tokenizer.encode("\n"))
    ids = np.concatenate(pieces) if pieces else np.zeros((0,), np.int32)
    lengths = np.add.reduceat([len(p) for p in pieces], np.arange(0, len(pieces), 2)) \
        if pieces else np.zeros((0,), np.int64)
    dtype = np.uint16 if tokenizer.vocab_size <= np.iinfo(np.uint16).max + 1 else np.uint32
    return ids.astype(dtype), np.asarray(lengths, np.int64)


def _scrub_key(scrub: bool) -> str:
    # Scrubbed texts are other texts: their own cache folder, renewed when the scrubber changes.
    if not scrub:
        return ""
    from lmjax.data import pii  # lazy: presidio is the optional 'privacy' extra
    return f"-pii{pii.VERSION}"


def _scrub(corpus: corpora.Corpus, log) -> tuple[corpora.Corpus, dict]:
    from lmjax.data import pii  # lazy: presidio is the optional 'privacy' extra

    scrubber = pii.Scrubber()
    train, counts = scrubber.scrub_all(corpus.train)
    val, val_counts = scrubber.scrub_all(corpus.val)
    counts.update(val_counts)
    log(f"PII scrub: {pii.report(counts, sum(map(len, corpus.train + corpus.val)))}")
    return corpora.Corpus(train, val, corpus.val_names), counts


def prepare(cfg: ml_collections.ConfigDict, log=print) -> Prepared:
    """Returns the prepared data for the `data` config section, building the cache if needed.

    The tokenizer is trained on the training documents (`data.tokenizer`, `data.vocab_size`),
    or, with `data.tokenizer_file`, read from that file: a run's own tokenizer.json, or a
    pretrained one such as GPT-2's. The file's contents are part of the cache's fingerprint.
    `data.name='shards'` reads token shards instead (data/shards.py: llm.c, nanoGPT, or a
    folder written by `lmjax prepare_data`), memory-mapped, nothing cached;
    `data.name='stream'` prepares such a folder from a large corpus (data/pipeline.py).
    """
    tokenizer_file = cfg.get("tokenizer_file", "")
    if tokenizer_file and not os.path.exists(tokenizer_file):
        raise corpora.DatasetError(f"data.tokenizer_file={tokenizer_file!r} does not exist: give "
                                   "a tokenizer.json (a run's, or a Hugging Face tokenizer's) "
                                   "or a Hugging Face tokenizer directory.")
    if not tokenizer_file and cfg.tokenizer not in KINDS:
        raise ValueError(f"data.tokenizer={cfg.tokenizer!r} is not one of {', '.join(KINDS)}.")
    kind, source = sources.lookup(cfg.name, "corpus", "tokens")
    if cfg.get("scrub_pii", False) and kind == "tokens":
        raise ValueError(f"data.scrub_pii=True works on texts the cache tokenizes (shakespeare, "
                         f"files, tfds:...), not data.name={cfg.name!r}: scrub the source files "
                         "first with lmjax scrub --in=... --out=...")
    if kind == "tokens":  # token shards, read as they are or prepared by data/pipeline.py
        return Prepared(**sources.function(source.load)(cfg, log))
    scrub = cfg.get("scrub_pii", False)
    root = cfg.cache_dir or default_cache_dir()
    directory = os.path.join(root, f"{cfg.name.replace(':', '_').replace('/', '_')}-"
                                   f"{corpora.fingerprint(cfg)}{_scrub_key(scrub)}")
    if not os.path.exists(os.path.join(directory, "meta.json")):
        log(f"Preparing data source {cfg.name!r} into {directory} ...")
        corpus = corpora.load_corpus(cfg)
        if scrub:  # before the tokenizer, so it learns the placeholders, never the PII
            corpus, pii_counts = _scrub(corpus, log)
        if tokenizer_file:
            tokenizer = load_tokenizer_file(tokenizer_file)
        else:
            tokenizer = KINDS[cfg.tokenizer].train(corpus.train, cfg.vocab_size)
        os.makedirs(root, exist_ok=True)
        # Build in a temporary folder and rename it into place, so an interrupted preparation
        # never leaves a half-written cache that a later run would trust.
        tmp = tempfile.mkdtemp(dir=root, prefix=".tmp-")
        try:
            train, train_lengths = _encode_docs(tokenizer, corpus.train)
            val, _ = _encode_docs(tokenizer, corpus.val)
            np.save(os.path.join(tmp, "train.npy"), train)
            np.save(os.path.join(tmp, "train_doc_lengths.npy"), train_lengths)
            np.save(os.path.join(tmp, "val.npy"), val)
            tokenizer.save(tmp)
            meta = {"source": cfg.name, "tokenizer": tokenizer.kind,
                    "tokenizer_file": os.path.abspath(tokenizer_file) if tokenizer_file else "",
                    "vocab_size": tokenizer.vocab_size,
                    "train_docs": len(corpus.train), "val_docs": len(corpus.val),
                    "val_names": corpus.val_names,
                    "train_chars": sum(map(len, corpus.train)),
                    "val_chars": sum(map(len, corpus.val)),
                    "train_tokens": int(train.size), "val_tokens": int(val.size)}
            if scrub:
                meta["pii_masked"] = dict(pii_counts)
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump(meta, f, indent=1)
            try:
                os.rename(tmp, directory)
            except OSError:  # another process (host) finished first: use theirs
                shutil.rmtree(tmp, ignore_errors=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    with open(os.path.join(directory, "meta.json")) as f:
        meta = json.load(f)
    return Prepared(
        train=np.load(os.path.join(directory, "train.npy"), mmap_mode="r"),
        val=np.load(os.path.join(directory, "val.npy"), mmap_mode="r"),
        tokenizer=load_tokenizer(directory), directory=directory, meta=meta,
        train_doc_lengths=np.load(os.path.join(directory, "train_doc_lengths.npy")))
