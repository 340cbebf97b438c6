"""Labelled text for sequence classification: fixed arrays of framed token rows and labels.

`data.name` picks the source:
- 'genres' (offline default): passages of Shakespeare labelled comedy/history/tragedy/poem,
  split by work (lmjax/data/genres.py);
- 'tfds:<name>' (needs the dataset, e.g. tfds:imdb_reviews): each example's text, truncated to
  the sequence length, with its integer label; read through `tfds.data_source`, without
  TensorFlow. Validation is the dataset's own 'test' split unless data.val_split names another.
- 'files' (local, offline): CSV, TSV or JSONL tables (`data.files`, paths or globs) with a text
  column `data.text_key` and a label column `data.label_key` (class names or integer ids).
  Validation is `data.val_files`, or else `data.val_fraction` of the rows drawn with a fixed
  seed. The classes are `data.class_names` in that order, or the labels found, sorted.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass

import numpy as np

from lmjax.config import require
from lmjax.data import genres, mlm, shakespeare, sources
from lmjax.data.corpora import DatasetError, expand_paths


@dataclass
class TextClassificationData:
    train_inputs: np.ndarray  # (N, seq_len) int32: [CLS] ... [SEP] [PAD]...
    train_labels: np.ndarray  # (N,) int32
    val_inputs: np.ndarray
    val_labels: np.ndarray
    class_names: list[str]
    description: str  # one line for the console: what is on each side of the split

    @property
    def num_classes(self) -> int:
        return len(self.class_names)


def _frame(docs: list[np.ndarray], seq_len: int, tokenizer) -> np.ndarray:
    return mlm.frame(docs, seq_len, tokenizer.cls_id, tokenizer.sep_id, tokenizer.pad_id)


def encode_texts(tokenizer, texts: list[str]) -> list[np.ndarray]:
    """Token ids of each text, through the tokenizer's batch call where it has one."""
    if hasattr(tokenizer, "encode_batch"):
        return tokenizer.encode_batch(texts)
    return [tokenizer.encode(t) for t in texts]


def genre_passages(tokenizer, seq_len: int, fold: int = -1, num_folds: int = 0,
                   min_tokens: int = 0) -> TextClassificationData:
    """Shakespeare passages of seq_len - 2 tokens (a work's shorter tail kept if at least
    `min_tokens`, default a quarter passage), labelled by genre, split by work."""
    texts = shakespeare.works()
    genres.check_corpus(texts)
    train_works, val_works = genres.split_works(fold, num_folds)
    size = seq_len - 2
    min_tokens = min_tokens or max(1, size // 4)
    encoded = dict(zip(texts, encode_texts(tokenizer, list(texts.values()))))

    def side(works):
        rows, labels = [], []
        for w in works:
            pieces = mlm.chunk(encoded[w], size, min_tokens)
            rows += pieces
            labels += [genres.GENRES.index(genres.GENRE_OF[w])] * len(pieces)
        return _frame(rows, seq_len, tokenizer), np.asarray(labels, np.int32)

    def counts(y):
        return "/".join(str(int((y == i).sum())) for i in range(len(genres.GENRES)))

    (xt, yt), (xv, yv) = side(train_works), side(val_works)
    split = "default split" if fold < 0 or num_folds < 2 else f"fold {fold} of {num_folds}"
    description = (f"genres {'/'.join(genres.GENRES)}; {split}: {len(train_works)} training works "
                   f"({counts(yt)} passages), {len(val_works)} held out "
                   f"({', '.join(val_works)}; {counts(yv)} passages)")
    return TextClassificationData(xt, yt, xv, yv, list(genres.GENRES), description)


def read_tfds(name: str, split: str, text_key: str = "text", label_key: str = "label",
              max_examples: int = 0) -> tuple[list[str], np.ndarray, list[str]]:
    """(texts, labels, class names) of one TFDS split, through tfds.data_source (no TensorFlow)."""
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name)
    except Exception as e:  # tfds raises DatasetNotFoundError and others
        raise DatasetError(f"TFDS has no dataset {name!r}: {str(e).splitlines()[0]}") from None
    features = builder.info.features
    for key, what in ((text_key, "data.text_key"), (label_key, "data.label_key")):
        if features is not None and key not in features:
            raise DatasetError(f"{what}={key!r} is not a feature of {name}: it has "
                               f"{', '.join(features.keys())}.")
    label_feature = features[label_key] if features is not None else None
    names = list(getattr(label_feature, "names", None) or [])
    try:
        source = tfds.data_source(name, split=split)
        n = len(source) if max_examples <= 0 else min(len(source), max_examples)
        texts, labels = [], np.zeros(n, np.int32)
        for i in range(n):  # one record at a time: the batched __getitems__ is unreliable
            record = source[i]
            value = record[text_key]
            texts.append(value.decode("utf-8") if isinstance(value, bytes) else str(value))
            labels[i] = int(record[label_key])
    except Exception as e:
        raise DatasetError(
            f"Could not read split {split!r} of TFDS dataset {name!r} ({type(e).__name__}: "
            f"{str(e)[:200]}). Its first use downloads it, which needs internet; or prepare it "
            "once elsewhere with `tfds build` and point TFDS_DATA_DIR at it.") from None
    return texts, labels, names


def tfds_examples(cfg, tokenizer, seq_len: int) -> TextClassificationData:
    """A TFDS text-classification dataset; each text truncated to its first seq_len - 2 tokens."""
    name = cfg.name[len("tfds:"):]
    train_texts, yt, names = read_tfds(name, "train", cfg.text_key, cfg.label_key,
                                       cfg.max_examples)
    val_split = cfg.val_split or "test"
    val_texts, yv, _ = read_tfds(name, val_split, cfg.text_key, cfg.label_key, cfg.max_examples)
    num_classes = max(len(names), int(max(yt.max(initial=0), yv.max(initial=0))) + 1)
    names = names or [str(i) for i in range(num_classes)]
    cut = lambda docs: [d[:seq_len - 2] for d in docs]  # noqa: E731
    xt = _frame(cut(encode_texts(tokenizer, train_texts)), seq_len, tokenizer)
    xv = _frame(cut(encode_texts(tokenizer, val_texts)), seq_len, tokenizer)
    description = (f"{name}: {len(yt)} training examples (train), {len(yv)} held out "
                   f"({val_split}); classes {', '.join(names)}")
    return TextClassificationData(xt, yt, xv, yv, names, description)


def read_table(path: str, text_key: str, label_key: str) -> tuple[list[str], list[str]]:
    """(texts, labels as strings) of a .csv / .tsv (header row) or .jsonl (one object a line)."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in (".csv", ".tsv", ".jsonl", ".json"):
        raise DatasetError(f"data.files: {path} is not .csv, .tsv or .jsonl (one JSON object "
                           "a line).")
    try:
        with open(path, encoding="utf-8", newline="") as f:
            if ext in (".csv", ".tsv"):
                rows = list(csv.DictReader(f, delimiter="," if ext == ".csv" else "\t"))
            else:
                rows = [json.loads(line) for line in f if line.strip()]
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, csv.Error) as e:
        raise DatasetError(f"data.files: cannot read {path}: {e}") from None
    texts, labels = [], []
    for i, row in enumerate(rows):
        missing = [k for k in (text_key, label_key) if k not in row or row[k] is None]
        if missing:
            field = "data.text_key" if missing[0] == text_key else "data.label_key"
            raise DatasetError(f"{path}, row {i + 1}: no column {missing[0]!r} ({field}); it has "
                               f"{', '.join(map(str, row))}.")
        texts.append(str(row[text_key]))
        labels.append(str(row[label_key]).strip())
    return texts, labels


def _read_tables(spec: str, field: str, cfg) -> tuple[list[str], list[str]]:
    texts, labels = [], []
    for path in expand_paths(spec, field):
        t, y = read_table(path, cfg.text_key, cfg.label_key)
        texts += t
        labels += y
    return texts, labels


def local_tables(cfg) -> tuple[list[str], list[str], list[str], list[str], str]:
    """(train texts, train labels, val texts, val labels, where the validation rows come from)
    of data.name='files'."""
    if not cfg.get("files", ""):
        raise DatasetError("data.name='files' needs --config.data.files=train.csv (CSV, TSV or "
                           "JSONL with columns data.text_key and data.label_key).")
    texts, labels = _read_tables(cfg.files, "data.files", cfg)
    if cfg.get("val_files", ""):
        vt, vy = _read_tables(cfg.val_files, "data.val_files", cfg)
        return texts, labels, vt, vy, cfg.val_files
    fraction = cfg.get("val_fraction", 0.1)
    order = np.random.default_rng(0).permutation(len(texts))  # fixed: not the training seed
    n_val = max(1, int(round(len(texts) * fraction)))
    val, train = sorted(order[:n_val]), sorted(order[n_val:])
    pick = lambda xs, ids: [xs[i] for i in ids]  # noqa: E731
    return (pick(texts, train), pick(labels, train), pick(texts, val), pick(labels, val),
            f"{fraction:.0%} of the rows")


def label_ids(labels: list[str], class_names: list[str], where: str) -> np.ndarray:
    """Labels (class names, or integer ids into class_names) as ids."""
    index = {n: i for i, n in enumerate(class_names)}
    out = np.zeros(len(labels), np.int32)
    for i, y in enumerate(labels):
        if y in index:
            out[i] = index[y]
        elif y.lstrip("-").isdigit() and 0 <= int(y) < len(class_names):
            out[i] = int(y)
        else:
            raise DatasetError(f"{where}: label {y!r} is not one of the classes "
                               f"{class_names} (data.class_names).")
    return out


def _class_names(cfg, labels: list[str]) -> list[str]:
    given = [n.strip() for n in cfg.get("class_names", "").split(",") if n.strip()]
    if given:
        return given
    found = sorted(set(labels))
    if all(y.lstrip("-").isdigit() for y in found):  # integer ids: 0..K-1 in order
        return [str(i) for i in range(max(int(y) for y in found) + 1)] if found else []
    return found


def file_examples(cfg, tokenizer, seq_len: int) -> TextClassificationData:
    """A local CSV/TSV/JSONL classification set; each text truncated to seq_len - 2 tokens."""
    train_texts, train_y, val_texts, val_y, where = local_tables(cfg)
    names = _class_names(cfg, train_y + val_y)
    if len(names) < 2:
        raise DatasetError(f"data.files: {len(names)} class found in {cfg.label_key!r}: a "
                           "classifier needs at least 2.")
    yt = label_ids(train_y, names, "data.files")
    yv = label_ids(val_y, names, "data.val_files" if cfg.get("val_files", "") else "data.files")
    cut = lambda docs: [d[:seq_len - 2] for d in docs]  # noqa: E731
    xt = _frame(cut(encode_texts(tokenizer, train_texts)), seq_len, tokenizer)
    xv = _frame(cut(encode_texts(tokenizer, val_texts)), seq_len, tokenizer)
    counts = lambda y: "/".join(str(int((y == i).sum())) for i in range(len(names)))  # noqa
    description = (f"{cfg.files}: {len(yt)} training examples ({counts(yt)}), {len(yv)} held "
                   f"out ({where}; {counts(yv)}); classes {', '.join(names)}")
    return TextClassificationData(xt, yt, xv, yv, names, description)


def training_texts(cfg) -> list[str]:
    """The texts a tokenizer for this data may be trained on (the training side only)."""
    _, source = sources.lookup(cfg.name, "labelled_text")
    return sources.function(source.texts)(cfg)


def load(cfg, tokenizer, seq_len: int) -> TextClassificationData:
    """The classification data named by the `data` config section (lmjax/data/sources.py)."""
    return sources.load(cfg, "labelled_text", args=(tokenizer, seq_len))


# The labelled-text sources (lmjax/data/sources.py): their examples and training texts.

def genre_examples(cfg, tokenizer, seq_len: int) -> TextClassificationData:
    return genre_passages(tokenizer, seq_len, *_fold(cfg))


def genre_texts(cfg) -> list[str]:
    works = shakespeare.works()
    return [works[w] for w in genres.split_works(*_fold(cfg))[0]]


def tfds_texts(cfg) -> list[str]:
    return read_tfds(cfg.name[len("tfds:"):], "train", cfg.text_key, cfg.label_key,
                     cfg.max_examples)[0]


def file_texts(cfg) -> list[str]:
    return local_tables(cfg)[0]


def check_files(d) -> None:
    require(bool(d.get("files", "")), "data.name='files' needs --config.data.files=train.csv "
            "(CSV, TSV or JSONL with columns data.text_key and data.label_key).")
    require(0.0 < d.val_fraction < 1.0, f"data.val_fraction={d.val_fraction}: the share of "
            "rows held out when there are no data.val_files, between 0 and 1.")


def _fold(cfg) -> tuple[int, int]:
    """(fold, number of folds): data.fold (-1: the default split) of data.num_folds."""
    return cfg.get("fold", -1), cfg.get("num_folds", 0)
