import os

import ml_collections
import numpy as np
import pytest

from lmjax.data import corpora
from lmjax.data.prepare import prepare


def _cfg(tmp_path, **kw):
    c = ml_collections.ConfigDict(dict(
        name="files", files="", val_fraction=0.25, text_key="text", max_examples=0, val_split="",
        tokenizer="char", vocab_size=0, cache_dir=str(tmp_path / "cache")))
    c.update(kw)
    return c


def test_local_files_split_by_file_and_cache_is_reused(tmp_path):
    for i in range(4):
        (tmp_path / f"doc{i}.txt").write_text(f"document number {i}\n" * 50)
    cfg = _cfg(tmp_path, files=str(tmp_path / "doc*.txt"))
    first = prepare(cfg, log=lambda s: None)
    assert first.meta["train_docs"] == 3 and first.meta["val_docs"] == 1
    assert first.meta["val_names"] == [str(tmp_path / "doc3.txt")]
    assert isinstance(first.train, np.memmap) and first.train.dtype == np.uint16
    assert "3" not in first.tokenizer.decode(first.train)  # the held-out file is not in train
    stamp = os.path.getmtime(os.path.join(first.directory, "train.npy"))
    messages = []
    again = prepare(cfg, log=messages.append)
    assert messages == [] and again.directory == first.directory
    assert os.path.getmtime(os.path.join(again.directory, "train.npy")) == stamp
    np.testing.assert_array_equal(again.val, first.val)


def test_single_file_holds_out_its_tail(tmp_path):
    (tmp_path / "one.txt").write_text("abcdefghij" * 100)
    p = prepare(_cfg(tmp_path, files=str(tmp_path / "one.txt"), val_fraction=0.1), log=print)
    assert p.meta["train_chars"] == 900 and p.meta["val_chars"] == 100


def test_bpe_tokenizer_is_saved_with_the_data(tmp_path):
    (tmp_path / "a.txt").write_text("to be or not to be, that is the question\n" * 200)
    (tmp_path / "b.txt").write_text("whether tis nobler in the mind to suffer\n" * 50)
    p = prepare(_cfg(tmp_path, files=f"{tmp_path}/a.txt,{tmp_path}/b.txt", tokenizer="bpe",
                     vocab_size=300, val_fraction=0.5), log=print)
    assert os.path.exists(os.path.join(p.directory, "tokenizer.json"))
    assert p.tokenizer.decode(p.val[:20]).startswith("whether tis nobler")


def test_missing_files_give_a_clear_error(tmp_path):
    with pytest.raises(corpora.DatasetError, match="no file matches"):
        prepare(_cfg(tmp_path, files=str(tmp_path / "nothing*.txt")))
    with pytest.raises(corpora.DatasetError, match="data.files"):
        prepare(_cfg(tmp_path, files=""))


def test_unknown_source_is_named(tmp_path):
    with pytest.raises(corpora.DatasetError, match="data.name='wikipedia'"):
        prepare(_cfg(tmp_path, name="wikipedia"))


def test_tfds_text_dataset_through_mock_data(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        p = prepare(_cfg(tmp_path, name="tfds:imdb_reviews", val_split="test"), log=print)
    assert p.meta["train_docs"] == 12 and p.meta["val_docs"] == 12
    assert p.meta["val_names"] == ["imdb_reviews:test"]
    assert p.train.size > 12 and p.tokenizer.vocab_size > 2


def test_tfds_unknown_dataset_and_feature_are_clear(tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    with pytest.raises(corpora.DatasetError, match="no dataset 'not_a_dataset_xyz'"):
        prepare(_cfg(tmp_path, name="tfds:not_a_dataset_xyz"))
    with tfds.testing.mock_data(num_examples=4):
        with pytest.raises(corpora.DatasetError, match="data.text_key='body'"):
            prepare(_cfg(tmp_path, name="tfds:imdb_reviews", text_key="body"))
