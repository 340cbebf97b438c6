"""Raw text: every way lmjax reads documents.

In memory, for corpora that fit (`load_corpus`, cached as token arrays by data/prepare.py):
'shakespeare' (embedded default), 'files' (local text files) or 'tfds:<dataset>' (any TFDS text
dataset, for users with internet). Every source splits by document, never inside one, so no
work is seen on both sides.

Streamed, for corpora too big for memory (`documents`, read by data/pipeline.py for
`data.name='stream'`): `data.files` lists paths or globs, comma-separated, of
- `.jsonl`, `.jsonl.gz`: one JSON object per line, the text in `data.text_key` (and an `id`
  field, when there is one, names the document);
- `.parquet`: the column `data.text_key`, read a row group batch at a time;
- a folder written by Hugging Face `datasets`' `save_to_disk` (Arrow, memory-mapped, offline);
  a `DatasetDict` with a 'validation' (or 'test') split keeps its own split;
- anything else: a text file, one document.
Streamed documents are split whole, by a hash of their id (file path, path:line, or the
record's id), so the split is the same however the corpus is cut into chunks or workers.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

import ml_collections
import xxhash

from lmjax.data import shakespeare, sources
from lmjax.data.sources import DatasetError  # noqa: F401 (raised here, imported from here too)
from lmjax.data.tokenizers import tokenizer_digest

CACHE_VERSION = 2  # bump when cleaning or the cache's files change: caches are rebuilt


@dataclass
class Corpus:
    train: list[str]
    val: list[str]
    val_names: list[str]


def fingerprint(cfg: ml_collections.ConfigDict) -> str:
    """A key for the prepared data: changes whenever the texts or their tokenization would."""
    _, source = sources.lookup(cfg.name, "corpus")
    parts = [cfg.name, cfg.tokenizer, str(cfg.vocab_size), str(CACHE_VERSION)]
    if cfg.get("tokenizer_file", ""):  # a fixed tokenizer (file or HF directory): its contents
        parts += ["tokenizer_file", tokenizer_digest(cfg.tokenizer_file)]
    parts += sources.function(source.fingerprint)(cfg)
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()[:16]


def load_corpus(cfg: ml_collections.ConfigDict) -> Corpus:
    """The documents of the corpus `data.name` names (lmjax/data/sources.py), split."""
    return sources.load(cfg, "corpus")


# The corpus sources (lmjax/data/sources.py): what each reads, and what its cache depends on.

def shakespeare_corpus(cfg: ml_collections.ConfigDict) -> Corpus:
    return _shakespeare()


def shakespeare_fingerprint(cfg: ml_collections.ConfigDict) -> list[str]:
    return sorted(shakespeare.VAL_WORKS) + sorted(shakespeare.DROPPED_WORKS)


def files_corpus(cfg: ml_collections.ConfigDict) -> Corpus:
    return _files(cfg.files, cfg.val_fraction)


def files_fingerprint(cfg: ml_collections.ConfigDict) -> list[str]:
    parts = []
    for path in _expand(cfg.files):
        st = os.stat(path)
        parts += [os.path.abspath(path), str(st.st_size), str(st.st_mtime_ns)]
    return parts + [str(cfg.val_fraction)]


def tfds_corpus(cfg: ml_collections.ConfigDict) -> Corpus:
    return _tfds(cfg.name[len("tfds:"):], cfg.text_key, cfg.max_examples, cfg.val_split)


def tfds_fingerprint(cfg: ml_collections.ConfigDict) -> list[str]:
    return [cfg.text_key, str(cfg.max_examples), cfg.val_split]


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
    texts = [text for p in paths for _, text in _text(p)]
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


# -- streamed documents (data.name='stream') ---------------------------------------------

VAL_SPLITS = ("validation", "test")  # a saved DatasetDict's held-out split, by these names


def expand(spec: str) -> list[str]:
    """The paths (or dataset folders) that `data.files` names, in sorted order per item."""
    paths = expand_paths(spec, missing="nothing matches")
    if not paths:
        raise DatasetError("data.name='stream' needs --config.data.files=<paths or globs> "
                           "(.jsonl, .jsonl.gz, .parquet, text files, or a saved HF dataset).")
    return paths


def split_of(doc_id: str, val_fraction: float) -> str:
    """'val' for about `val_fraction` of document ids, fixed by the id alone."""
    return "val" if xxhash.xxh64_intdigest(doc_id.encode()) % 1_000_000 < val_fraction * 1_000_000 \
        else "train"


def documents(spec: str, text_key: str, val_fraction: float) -> Iterator[tuple[str, str, str]]:
    """(document id, text, 'train' | 'val') for every document, in a fixed order."""
    for path in expand(spec):
        if os.path.isdir(path):
            yield from _hf_dataset(path, text_key, val_fraction)
            continue
        if path.endswith((".jsonl", ".jsonl.gz")):
            reader = _jsonl(path, text_key)
        elif path.endswith(".parquet"):
            reader = _parquet(path, text_key)
        else:
            reader = _text(path)
        for doc_id, text in reader:
            yield doc_id, text, split_of(doc_id, val_fraction)


def _text(path: str) -> Iterator[tuple[str, str]]:
    """A text file as one document: (its path, its text)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        raise DatasetError(f"data.files: cannot read {path} as UTF-8 text ({e}); give text, "
                           ".jsonl, .jsonl.gz or .parquet files.") from None
    yield path, text


def _jsonl(path: str, text_key: str) -> Iterator[tuple[str, str]]:
    raw = gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")
    with io.TextIOWrapper(raw, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                text = record[text_key]
            except (json.JSONDecodeError, KeyError, TypeError):
                raise DatasetError(f"{path}:{lineno}: not a JSON object with a {text_key!r} field "
                                   "(set data.text_key to the field that holds the text).") \
                    from None
            yield f"{path}:{record.get('id', lineno)}", text


def _parquet(path: str, text_key: str) -> Iterator[tuple[str, str]]:
    try:
        import pyarrow.parquet as pq  # noqa: lazy (the optional 'data' extra)
    except ImportError:
        raise DatasetError(f"{path}: reading Parquet needs `pip install 'lmjax[data]'`.") \
            from None

    f = pq.ParquetFile(path)
    if text_key not in f.schema_arrow.names:
        raise DatasetError(f"{path}: no column {text_key!r} (it has "
                           f"{', '.join(f.schema_arrow.names)}); set data.text_key.")
    row = 0
    for batch in f.iter_batches(batch_size=1024, columns=[text_key]):
        for text in batch.column(0).to_pylist():
            yield f"{path}:{row}", text or ""
            row += 1


def _hf_dataset(path: str, text_key: str, val_fraction: float) -> Iterator[tuple[str, str, str]]:
    try:
        import datasets  # noqa: lazy (the optional 'data' extra)
    except ImportError:
        raise DatasetError(f"{path} is a folder: reading a saved Hugging Face dataset needs "
                           "`pip install 'lmjax[data]'`.") from None
    try:
        loaded = datasets.load_from_disk(path)
    except FileNotFoundError as e:
        raise DatasetError(f"{path}: not a dataset saved with `save_to_disk` ({e}).") from None
    if isinstance(loaded, datasets.DatasetDict):
        val_name = next((s for s in VAL_SPLITS if s in loaded), None)
        parts = [(name, ds, "val" if name == val_name else "train")
                 for name, ds in loaded.items() if name == "train" or name == val_name]
    else:
        parts = [("", loaded, None)]
    for name, ds, split in parts:
        if text_key not in ds.column_names:
            raise DatasetError(f"{path}: no column {text_key!r} (it has "
                               f"{', '.join(ds.column_names)}); set data.text_key.")
        row = 0
        for batch in ds.select_columns([text_key]).iter(batch_size=1024):
            for text in batch[text_key]:
                doc_id = f"{path}:{name}:{row}"
                yield doc_id, text or "", split or split_of(doc_id, val_fraction)
                row += 1
