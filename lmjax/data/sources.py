"""Every data source lmjax reads, keyed by `data.name`: one registry, one place that dispatches.

A task reads sources of one or two kinds, and asks here for the source `data.name` names:

    kind           what its loader returns                         who reads it
    corpus         documents, split train/val (corpora.Corpus)     lm, mlm (cached as tokens)
    tokens         token shards, memory-mapped (a Prepared dict)   lm, mlm
    images         image examples, split (images.Examples)         classify
    table          standardised rows, split (tabular.TableExamples) classify, regress
    labelled_text  token rows and labels (TextClassificationData)  text_classify
    records        prompt/response records, split                  sft

A name ending in ':' ('tfds:') matches every 'tfds:<dataset>'. Loaders are imported on use, so
naming a source costs nothing until it is read. An unknown name gets one error listing the
sources of the kinds asked for.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable


class DatasetError(RuntimeError):
    """A dataset that cannot be found, read or downloaded."""


@dataclasses.dataclass(frozen=True)
class Source:
    load: str               # "module:function" that reads it
    about: str              # what it is, for messages
    check: str = ""         # "module:function" checking the data section's fields for it
    fingerprint: str = ""   # corpus: "module:function" of what the token cache depends on
    texts: str = ""         # labelled_text: "module:function", the training side's texts
    corpus: str = ""        # labelled_text: the corpus whose cached tokenizer it shares
    #                         ('*': the same name as a corpus); '' trains one on `texts`


SOURCES: dict[str, dict[str, Source]] = {
    "corpus": {
        "shakespeare": Source("lmjax.data.corpora:shakespeare_corpus",
                              "Shakespeare's complete works (embedded, offline)",
                              fingerprint="lmjax.data.corpora:shakespeare_fingerprint"),
        "files": Source("lmjax.data.corpora:files_corpus",
                        "local text files (--config.data.files=a.txt,b.txt or globs)",
                        fingerprint="lmjax.data.corpora:files_fingerprint"),
        "tfds:": Source("lmjax.data.corpora:tfds_corpus",
                        "a TFDS text dataset, e.g. tfds:lm1b (downloads once)",
                        fingerprint="lmjax.data.corpora:tfds_fingerprint"),
    },
    "tokens": {
        "shards": Source("lmjax.data.shards:load", "token shards (llm.c, nanoGPT or prepared; "
                         "--config.data.shards=...)"),
        "stream": Source("lmjax.data.pipeline:load_stream", "a corpus too big for memory, "
                         "prepared into shards (--config.data.files=...)",
                         check="lmjax.data.pipeline:check"),
    },
    "images": {
        "fashion_mnist": Source("lmjax.data.images:load_fashion_mnist",
                                "Fashion-MNIST (Debian's dataset-fashion-mnist, offline)"),
        "tfds:": Source("lmjax.data.images:load_tfds", "a TFDS image dataset, e.g. tfds:mnist"),
    },
    "table": {
        "diabetes": Source("lmjax.data.tabular:load_table", "scikit-learn's diabetes "
                           "(regression)"),
        "breast_cancer": Source("lmjax.data.tabular:load_table", "scikit-learn's breast cancer "
                                "(binary)"),
    },
    "labelled_text": {
        "genres": Source("lmjax.data.text_classification:genre_examples",
                         "the genre of Shakespeare passages (offline)",
                         texts="lmjax.data.text_classification:genre_texts",
                         corpus="shakespeare"),
        "files": Source("lmjax.data.text_classification:file_examples",
                        "local CSV/TSV/JSONL tables (--config.data.files=...)",
                        check="lmjax.data.text_classification:check_files",
                        texts="lmjax.data.text_classification:file_texts"),
        "tfds:": Source("lmjax.data.text_classification:tfds_examples",
                        "a TFDS text classification dataset, e.g. tfds:imdb_reviews",
                        texts="lmjax.data.text_classification:tfds_texts", corpus="*"),
    },
    "records": {
        "qa_shakespeare": Source("lmjax.data.sft:qa_shakespeare_records",
                                 "the closed-book Shakespeare QA set (offline)"),
        "jsonl": Source("lmjax.data.sft:jsonl_records", "a JSONL file of {'prompt', "
                        "'response'} or {'messages'} records (--config.data.train_file=...)",
                        check="lmjax.data.sft:check_jsonl"),
        "tfds:": Source("lmjax.data.sft:tfds_records", "a SQuAD-shaped TFDS dataset, "
                        "e.g. tfds:squad"),
    },
}

NOUNS = {"corpus": "known source", "tokens": "known source", "images": "known source of examples",
         "table": "known source of examples", "labelled_text": "classification source",
         "records": "known source of SFT records"}


def lookup(name: str, *kinds: str) -> tuple[str, Source]:
    """(kind, source) of `data.name` among the sources of `kinds`; an error naming them all."""
    for kind in kinds:
        table = SOURCES[kind]
        key = name if name in table else name[:name.index(":") + 1] if ":" in name else ""
        if key in table and (key != name or not key.endswith(":")):
            return kind, table[key]
    known = [f"'{n}<dataset>'" if n.endswith(":") else repr(n) for kind in kinds
             for n in SOURCES[kind]]
    raise DatasetError(f"data.name={name!r} is not a {NOUNS[kinds[0]]}: use "
                       f"{', '.join(dict.fromkeys(known))}.")


def function(spec: str) -> Callable:
    """The function a "module:function" entry names."""
    module, name = spec.split(":")
    return getattr(importlib.import_module(module), name)


def load(data, *kinds: str, args: tuple = ()):
    """What the source `data.name` names gives (see the table above), read with the `data`
    section and `args`."""
    _, source = lookup(data.name, *kinds)
    return function(source.load)(data, *args)


def check(data, *kinds: str) -> None:
    """Refuses a `data.name` the task cannot read, and checks the fields its source needs."""
    _, source = lookup(data.name, *kinds)
    if source.check:
        function(source.check)(data)
