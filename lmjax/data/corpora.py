"""Text sources, each giving documents for training and documents for validation.

`data.name` picks the source: 'shakespeare' (embedded default), 'files' (local text files) or
'tfds:<dataset>' (any TFDS text dataset, for users with internet). Every source splits by
document, never inside one, so no work is seen on both sides.
"""

from __future__ import annotations

import glob
import hashlib
import math
import os
from dataclasses import dataclass

import ml_collections

from lmjax.data import shakespeare
from lmjax.data.tokenizers import tokenizer_digest

CLEANING_VERSION = 1  # bump when cleaning changes, so cached token arrays are rebuilt


class DatasetError(RuntimeError):
    """A dataset that cannot be found, read or downloaded."""


@dataclass
class Corpus:
    train: list[str]
    val: list[str]
    val_names: list[str]


def fingerprint(cfg: ml_collections.ConfigDict) -> str:
    """A key for the prepared data: changes whenever the texts or their tokenization would."""
    parts = [cfg.name, cfg.tokenizer, str(cfg.vocab_size), str(CLEANING_VERSION)]
    if cfg.get("tokenizer_file", ""):  # a fixed tokenizer (file or HF directory): its contents
        parts += ["tokenizer_file", tokenizer_digest(cfg.tokenizer_file)]
    if cfg.name == "files":
        for path in _expand(cfg.files):
            st = os.stat(path)
            parts += [os.path.abspath(path), str(st.st_size), str(st.st_mtime_ns)]
        parts.append(str(cfg.val_fraction))
    elif cfg.name.startswith("tfds:"):
        parts += [cfg.text_key, str(cfg.max_examples), cfg.val_split]
    elif cfg.name == "shakespeare":
        parts += sorted(shakespeare.VAL_WORKS) + sorted(shakespeare.DROPPED_WORKS)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def load_corpus(cfg: ml_collections.ConfigDict) -> Corpus:
    if cfg.name == "shakespeare":
        return _shakespeare()
    if cfg.name == "files":
        return _files(cfg.files, cfg.val_fraction)
    if cfg.name.startswith("tfds:"):
        return _tfds(cfg.name[len("tfds:"):], cfg.text_key, cfg.max_examples,
                     cfg.val_split)
    raise DatasetError(
        f"data.name={cfg.name!r} is not a known source: use 'shakespeare', 'files' "
        "(with --config.data.files=a.txt,b.txt) or 'tfds:<dataset>' (e.g. tfds:lm1b).")


def _shakespeare() -> Corpus:
    works = shakespeare.works()
    missing = set(shakespeare.VAL_WORKS) - set(works)
    assert not missing, f"validation works not in the corpus: {missing}"
    train = [t for name, t in works.items() if name not in shakespeare.VAL_WORKS]
    val_names = [name for name in works if name in shakespeare.VAL_WORKS]
    return Corpus(train, [works[n] for n in val_names], val_names)


def expand_paths(spec: str, field: str = "data.files", missing: str = "no file matches"
                 ) -> list[str]:
    """The paths a comma-separated list of paths and globs names, sorted within each item;
    an item that matches nothing is an error naming `field`."""
    paths = []
    for item in (s.strip() for s in spec.split(",")):
        if item:
            found = sorted(glob.glob(os.path.expanduser(item)))
            if not found:
                raise DatasetError(f"{field}: {missing} {item!r}.")
            paths += found
    return paths


def _expand(spec: str) -> list[str]:
    paths = expand_paths(spec)
    if not paths:
        raise DatasetError("data.name='files' needs --config.data.files=path[,path...] (globs ok).")
    return paths


def _files(spec: str, val_fraction: float) -> Corpus:
    paths = _expand(spec)
    texts = []
    for p in paths:
        try:
            with open(p, encoding="utf-8") as f:
                texts.append(f.read())
        except (OSError, UnicodeDecodeError) as e:
            raise DatasetError(f"data.files: cannot read {p} as UTF-8 text: {e}") from e
    if len(paths) == 1:
        # One document: hold out its tail.
        cut = int(len(texts[0]) * (1 - val_fraction))
        return Corpus([texts[0][:cut]], [texts[0][cut:]], [paths[0] + " (tail)"])
    # Several: the last files (in sorted order) are held out whole.
    n_val = max(1, math.ceil(len(paths) * val_fraction))
    return Corpus(texts[:-n_val], texts[-n_val:], paths[-n_val:])


def _tfds(name: str, text_key: str, max_examples: int, val_split: str) -> Corpus:
    import tensorflow_datasets as tfds

    def read(split: str) -> list[str]:
        source = tfds.data_source(name, split=split)
        n = len(source) if max_examples <= 0 else min(len(source), max_examples)
        out = []
        for i in range(n):  # one record at a time: the batched __getitems__ is unreliable
            value = source[i][text_key]
            out.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
        return out

    try:
        builder = tfds.builder(name)
    except Exception as e:  # tfds raises DatasetNotFoundError and others
        raise DatasetError(f"TFDS has no dataset {name!r}: {str(e).splitlines()[0]}") from None
    features = builder.info.features
    if features is not None and text_key not in features:
        raise DatasetError(f"data.text_key={text_key!r} is not a feature of {name}: it has "
                           f"{', '.join(features.keys())}.")
    known = list(builder.info.splits.keys())
    if not val_split:  # the dataset's own held-out split, by the usual names
        val_split = next((s for s in ("validation", "test") if s in known), "validation")
    try:
        train = read("train")
        try:
            val = read(val_split)
        except Exception:
            if val_split != "validation" or known:
                raise
            val_split, val = "test", read("test")
    except Exception as e:
        raise DatasetError(
            f"Could not read TFDS dataset {name!r} ({type(e).__name__}: {str(e)[:200]}). Its "
            "first use downloads it, which needs internet; or prepare it once elsewhere with "
            "`tfds build` and point TFDS_DATA_DIR at it. Choose the held-out split with "
            "--config.data.val_split.") from None
    return Corpus(train, val, [f"{name}:{val_split}"])
