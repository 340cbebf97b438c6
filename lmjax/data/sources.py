"""Documents read as a stream, never a whole corpus in memory (`data.name='stream'`).

`data.files` lists paths or globs, comma-separated, of:
- `.jsonl`, `.jsonl.gz`: one JSON object per line, the text in `data.text_key` (and an `id`
  field, when there is one, names the document);
- `.parquet`: the column `data.text_key`, read a row group batch at a time;
- a folder written by Hugging Face `datasets`' `save_to_disk` (Arrow, memory-mapped, offline);
  a `DatasetDict` with a 'validation' (or 'test') split keeps its own split;
- anything else: a text file, one document.

Documents are split whole: by a hash of their id (file path, path:line, or the record's id), so
the split is the same however the corpus is cut into chunks or workers.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator

import xxhash

from lmjax.data.corpora import DatasetError, expand_paths

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
    try:
        with open(path, encoding="utf-8") as f:
            yield path, f.read()
    except UnicodeDecodeError as e:
        raise DatasetError(f"data.files: {path} is not UTF-8 text ({e}); give text, .jsonl, "
                           ".jsonl.gz or .parquet files.") from None


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
