"""Streaming document sources: JSON lines (plain and gzipped), Parquet, text, saved HF datasets."""

import gzip
import json

import pytest

from lmjax.data import corpora
from lmjax.data.corpora import DatasetError

TEXTS = [f"document {i} " + "word " * i for i in range(40)]


def _docs(spec, **kw):
    return list(corpora.documents(spec, kw.pop("text_key", "text"), kw.pop("val", 0.25)))


def test_jsonl_plain_and_gzipped_give_the_same_documents_in_order(tmp_path):
    lines = "".join(json.dumps({"text": t, "n": i}) + "\n" for i, t in enumerate(TEXTS))
    (tmp_path / "a.jsonl").write_text(lines + "\n")  # a blank line is skipped
    with gzip.open(tmp_path / "b.jsonl.gz", "wt") as f:
        f.write(lines)
    plain, zipped = _docs(str(tmp_path / "a.jsonl")), _docs(str(tmp_path / "b.jsonl.gz"))
    assert [t for _, t, _ in plain] == TEXTS == [t for _, t, _ in zipped]
    assert plain[3][0] == f"{tmp_path / 'a.jsonl'}:4"  # path:line names the document
    splits = [s for _, _, s in plain]
    assert 0 < splits.count("val") < len(TEXTS)
    assert splits == [s for _, _, s in _docs(str(tmp_path / "a.jsonl"))]  # fixed by the ids


def test_split_is_by_document_id_and_close_to_the_fraction():
    ids = [f"doc{i}" for i in range(20_000)]
    share = sum(corpora.split_of(i, 0.1) == "val" for i in ids) / len(ids)
    assert abs(share - 0.1) < 0.01
    assert all(corpora.split_of(i, 0.0) == "train" for i in ids[:100])


def test_parquet_text_column_and_text_files(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": TEXTS, "other": list(range(40))}),
                   tmp_path / "c.parquet", row_group_size=7)
    docs = _docs(str(tmp_path / "c.parquet"), text_key="body")
    assert [t for _, t, _ in docs] == TEXTS
    with pytest.raises(DatasetError, match="no column 'text'.*body, other"):
        _docs(str(tmp_path / "c.parquet"))
    (tmp_path / "x.txt").write_text("one whole file")
    (tmp_path / "y.txt").write_text("another")
    docs = _docs(f"{tmp_path}/*.txt,{tmp_path}/c.parquet", text_key="body")
    assert [t for _, t, _ in docs[:2]] == ["one whole file", "another"] and len(docs) == 42


def test_saved_hf_dataset_keeps_its_own_validation_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    dd = datasets.DatasetDict({
        "train": datasets.Dataset.from_dict({"text": TEXTS[:30]}),
        "validation": datasets.Dataset.from_dict({"text": TEXTS[30:]}),
        "unused": datasets.Dataset.from_dict({"text": ["x"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    docs = _docs(str(tmp_path / "dd"))
    assert [t for _, t, _ in docs] == TEXTS
    assert [s for _, _, s in docs] == ["train"] * 30 + ["val"] * 10
    datasets.Dataset.from_dict({"content": TEXTS}).save_to_disk(str(tmp_path / "one"))
    docs = _docs(str(tmp_path / "one"), text_key="content")
    assert len(docs) == 40 and {s for _, _, s in docs} == {"train", "val"}


def test_bad_inputs_are_named(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\n{"body": "no text"}\n')
    with pytest.raises(DatasetError, match=r"bad.jsonl:2: .*'text' field"):
        _docs(str(tmp_path / "bad.jsonl"))
    with pytest.raises(DatasetError, match="nothing matches"):
        _docs(str(tmp_path / "none*.jsonl"))
    with pytest.raises(DatasetError, match="data.files"):
        _docs("")
