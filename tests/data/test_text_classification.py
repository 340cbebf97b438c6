"""TFDS text classification (imdb_reviews) through tfds.data_source, on TFDS's mock data."""

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds

from lmjax.data import text_classification as tc
from lmjax.data.corpora import DatasetError
from lmjax.data.tokenizers import WordPieceTokenizer


def data_cfg(**kw):
    c = ml_collections.ConfigDict(dict(name="tfds:imdb_reviews", text_key="text",
                                       label_key="label", max_examples=0, val_split=""))
    c.update(kw)
    return c


def test_imdb_reviews_through_mock_data():
    with tfds.testing.mock_data(num_examples=12):
        texts = tc.training_texts(data_cfg())
        assert len(texts) == 12 and all(isinstance(t, str) for t in texts)
        tok = WordPieceTokenizer.train(texts * 3, vocab_size=100)
        data = tc.load(data_cfg(), tok, 16)
    assert data.class_names == ["neg", "pos"]
    assert data.train_inputs.shape == (12, 16) and data.val_inputs.shape == (12, 16)
    assert set(np.unique(np.concatenate([data.train_labels, data.val_labels]))) <= {0, 1}
    assert (data.train_inputs[:, 0] == tok.cls_id).all()
    assert ((data.train_inputs == tok.sep_id).sum(1) == 1).all()  # truncated, still framed
    assert "imdb_reviews" in data.description and "test" in data.description


def test_max_examples_and_a_wrong_feature_name():
    with tfds.testing.mock_data(num_examples=12):
        assert len(tc.training_texts(data_cfg(max_examples=5))) == 5
        with pytest.raises(DatasetError, match="label_key='stars'.*text, label|label, text"):
            tc.training_texts(data_cfg(label_key="stars"))


def test_an_unknown_source_is_a_readable_error():
    with pytest.raises(DatasetError, match="not a classification source"):
        tc.load(data_cfg(name="shakespeare"), None, 16)


def _files_cfg(**kw):
    c = ml_collections.ConfigDict(dict(name="files", files="", val_files="", val_fraction=0.25,
                                       class_names="", text_key="review", label_key="stars"))
    c.update(kw)
    return c


def test_local_csv_and_jsonl_tables(tmp_path):
    (tmp_path / "train.csv").write_text(
        'review,stars\n"Great, loved it",positive\nawful film,negative\n"so, so bad",negative\n'
        "good fun,positive\n", encoding="utf-8")
    (tmp_path / "val.jsonl").write_text(
        '{"review": "这部电影很好看", "stars": 1}\n\n{"review": "boring", "stars": "negative"}\n',
        encoding="utf-8")
    texts = tc.training_texts(_files_cfg(files=str(tmp_path / "train.csv"),
                                         val_files=str(tmp_path / "val.jsonl")))
    assert texts == ["Great, loved it", "awful film", "so, so bad", "good fun"]  # quoted commas
    tok = WordPieceTokenizer.train(texts * 5, vocab_size=80)
    cfg = _files_cfg(files=str(tmp_path / "*.csv"), val_files=str(tmp_path / "val.jsonl"),
                     class_names="negative,positive")
    data = tc.load(cfg, tok, 8)
    assert data.class_names == ["negative", "positive"]
    assert data.train_labels.tolist() == [1, 0, 0, 1]
    assert data.val_labels.tolist() == [1, 0]  # an integer label is an index into class_names
    assert data.train_inputs.shape == (4, 8) and (data.train_inputs[:, 0] == tok.cls_id).all()
    # Without val_files: a fixed share of the rows, the same every time, disjoint from training.
    rows = "".join(f"text {i},{'ab'[i % 2]}\n" for i in range(20))
    (tmp_path / "all.csv").write_text("review,stars\n" + rows)
    one = tc.load(_files_cfg(files=str(tmp_path / "all.csv")), tok, 8)
    assert len(one.val_labels) == 5 and len(one.train_labels) == 15
    assert one.class_names == ["a", "b"]
    np.testing.assert_array_equal(one.val_inputs,
                                  tc.load(_files_cfg(files=str(tmp_path / "all.csv")), tok,
                                          8).val_inputs)
    train_texts, _, val_texts, _, _ = tc.local_tables(_files_cfg(files=str(tmp_path / "all.csv")))
    assert len(set(train_texts) | set(val_texts)) == 20 and not set(train_texts) & set(val_texts)


def test_local_table_mistakes_are_readable_errors(tmp_path):
    (tmp_path / "t.csv").write_text("text,label\nfine,positive\n")
    with pytest.raises(DatasetError, match=r"no column 'review' \(data.text_key\); it has text, "
                                           "label"):
        tc.training_texts(_files_cfg(files=str(tmp_path / "t.csv")))
    with pytest.raises(DatasetError, match="label 'positive' is not one of the classes"):
        tc.load(_files_cfg(files=str(tmp_path / "t.csv"), text_key="text", label_key="label",
                           class_names="neg,pos"), WordPieceTokenizer.train(["fine"] * 9, 70), 8)
    with pytest.raises(DatasetError, match="no file matches"):
        tc.training_texts(_files_cfg(files=str(tmp_path / "missing.csv")))
    (tmp_path / "t.txt").write_text("x")
    with pytest.raises(DatasetError, match="not .csv, .tsv or .jsonl"):
        tc.training_texts(_files_cfg(files=str(tmp_path / "t.txt")))
