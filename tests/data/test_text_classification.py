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
