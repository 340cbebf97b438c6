import random

from lmjax.data import corpora, shakespeare


def test_cleaning_drops_title_and_cast_list():
    works = shakespeare.works()
    hamlet = works["hamlet"]
    assert hamlet.startswith("ACT I.")
    assert "PERSONS REPRESENTED" not in hamlet and "by William Shakespeare" not in hamlet
    assert "\n\n\n" not in hamlet and "\t" not in hamlet
    assert all(line == line.rstrip() for line in hamlet.splitlines())
    assert "To be, or not to be" in hamlet  # the play itself is intact


def test_one_edition_of_each_work():
    names = shakespeare.works().keys()
    assert not any(n.endswith("_f") for n in names)  # no First Folio duplicates
    assert "passionate_pilgrim" not in names  # reprints Sonnets and Love's Labour's Lost
    assert len(names) == 41


def test_no_work_on_both_sides_of_the_split():
    works = shakespeare.works()
    corpus = corpora.load_corpus(_cfg())
    assert set(corpus.val_names) == set(shakespeare.VAL_WORKS)
    train_text = "\n".join(corpus.train)
    # Independent of names: no validation line of some length appears anywhere in training.
    rng = random.Random(0)
    for name in corpus.val_names:
        lines = [l for l in works[name].splitlines() if len(l) >= 45]
        for line in rng.sample(lines, 40):
            assert line not in train_text, (name, line)
    # And every work is used exactly once.
    assert len(corpus.train) + len(corpus.val) == len(works)


def _cfg():
    import ml_collections
    return ml_collections.ConfigDict(dict(name="shakespeare", tokenizer="char", vocab_size=0))
