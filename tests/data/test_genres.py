"""The genre task: every work labelled, splits by work with every class on both sides."""

import numpy as np
import pytest

from lmjax.data import genres, shakespeare
from lmjax.data import text_classification as tc
from lmjax.data.tokenizers import WordPieceTokenizer


def test_every_work_of_the_corpus_has_a_genre():
    names = list(shakespeare.works())
    assert len(names) == 41
    genres.check_corpus(names)  # raises if the table and the corpus disagree
    counts = {g: sum(v == g for v in genres.GENRE_OF.values()) for g in genres.GENRES}
    assert counts == {"comedy": 15, "history": 10, "tragedy": 12, "poem": 4}
    with pytest.raises(ValueError, match="unlabelled"):
        genres.check_corpus(names + ["edward_iii"])


def _check(train, val):
    assert not set(train) & set(val)  # no work on both sides
    assert sorted(train + val) == sorted(genres.GENRE_OF)
    for side in (train, val):
        assert {genres.GENRE_OF[w] for w in side} == set(genres.GENRES)


def test_default_split_holds_out_the_language_models_validation_works():
    train, val = genres.split_works()
    _check(train, val)
    assert sorted(val) == sorted(shakespeare.VAL_WORKS)


@pytest.mark.parametrize("k", [2, 3, 4])
def test_folds_partition_the_works_by_genre(k):
    vals = []
    for fold in range(k):
        train, val = genres.split_works(fold, k)
        _check(train, val)
        vals += val
    assert sorted(vals) == sorted(genres.GENRE_OF)  # each work validates exactly once


def test_bad_folds_are_readable_errors():
    with pytest.raises(ValueError, match="2 to 4 folds"):
        genres.split_works(0, 5)
    with pytest.raises(ValueError, match="below"):
        genres.split_works(3, 3)


@pytest.fixture(scope="module")
def tok():
    works = shakespeare.works()
    return WordPieceTokenizer.train([works[w] for w in genres.split_works()[0]], vocab_size=512)


def test_passages_carry_their_works_label(tok):
    data = tc.genre_passages(tok, 64)
    assert data.class_names == list(genres.GENRES)
    assert data.train_inputs.shape[1] == 64 and data.train_inputs.dtype == np.int32
    assert len(data.train_inputs) == len(data.train_labels) > 10 * len(data.val_labels) // 2
    assert (data.train_inputs[:, 0] == tok.cls_id).all()
    assert ((data.val_inputs == tok.sep_id).sum(1) == 1).all()
    assert set(np.unique(data.val_labels)) == {0, 1, 2, 3}
    # Rebuild one validation work's passages: they are labelled with its genre.
    ids = tok.encode(shakespeare.works()["rape_of_lucrece"])
    first = mlm_frame(tok, ids[:62])
    hit = np.flatnonzero((data.val_inputs == first).all(1))
    assert len(hit) == 1 and data.val_labels[hit[0]] == genres.GENRES.index("poem")
    # No training passage is a validation passage.
    train_rows = {r.tobytes() for r in data.train_inputs}
    assert not any(r.tobytes() in train_rows for r in data.val_inputs)


def mlm_frame(tok, ids):
    from lmjax.data import mlm

    return mlm.frame([ids], 64, tok.cls_id, tok.sep_id, tok.pad_id)[0]
