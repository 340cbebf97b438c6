"""WordPiece special tokens, passages that keep to their documents, and BERT's masking."""

import numpy as np
import pytest

from lmjax.data import mlm
from lmjax.data.tokenizers import WordPieceTokenizer, load_tokenizer

TEXTS = ["Now is the winter of our discontent made glorious summer by this sun of York.",
         "To be, or not to be, that is the question: whether 'tis nobler in the mind.",
         "Shall I compare thee to a summer's day? Thou art more lovely and more temperate."] * 5


@pytest.fixture(scope="module")
def tok():
    return WordPieceTokenizer.train(TEXTS, vocab_size=300)


def test_special_tokens_come_first_and_survive_saving(tok, tmp_path):
    assert (tok.pad_id, tok.unk_id, tok.cls_id, tok.sep_id, tok.mask_id) == (0, 1, 2, 3, 4)
    ids = tok.encode("the summer of York")
    assert ids.min() >= 5  # encoding adds no [CLS]/[SEP] of its own
    assert tok.decode(ids) == "the summer of York"
    tok.save(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert isinstance(again, WordPieceTokenizer)
    np.testing.assert_array_equal(again.encode("the summer of York"), ids)
    assert tok.encode("\u00e6on")[0] == tok.unk_id  # a character never seen


def test_passages_are_framed_and_never_cross_documents(tok):
    docs = [np.arange(5, 25), np.arange(30, 37)]  # 20 and 7 ordinary ids
    stream = np.concatenate([docs[0], [tok.sep_id], docs[1], [tok.sep_id]])
    assert [d.tolist() for d in mlm.split_documents(stream, tok.sep_id)] == [
        d.tolist() for d in docs]
    rows = mlm.passages(stream, 10, tok, min_tokens=1)  # 8 ids per passage
    assert rows.shape == (3 + 1, 10)
    assert (rows[:, 0] == tok.cls_id).all()
    body = [r[1:][r[1:] >= 5] for r in rows]
    assert [b.tolist() for b in body] == [list(range(5, 13)), list(range(13, 21)),
                                          list(range(21, 25)), list(range(30, 37))]
    # The short tails end in [SEP] and are padded.
    np.testing.assert_array_equal(rows[2], [2, 21, 22, 23, 24, 3, 0, 0, 0, 0])
    assert len(mlm.passages(stream, 10, tok, min_tokens=5)) == 2 + 1  # 4-id tail dropped


def test_masking_statistics_and_special_tokens(tok):
    seq_len, n_rows = 64, 3000
    rng = np.random.default_rng(0)
    lengths = rng.integers(10, seq_len - 2, n_rows)  # varied padding
    rows = mlm.frame([rng.integers(5, tok.vocab_size, n) for n in lengths], seq_len,
                     tok.cls_id, tok.sep_id, tok.pad_id)
    b = mlm.mask_batch(rows, np.arange(n_rows), seed=1, step=7, tokenizer=tok)
    P = mlm.num_predictions(seq_len)
    assert P == round(0.15 * 62) and b["mlm_positions"].shape == (n_rows, P)
    w = b["mlm_weights"] > 0
    # Exactly round(15%) of each row's ordinary tokens (at least one) are selected.
    np.testing.assert_array_equal(w.sum(1), np.maximum(1, np.floor(0.15 * lengths + 0.5)))
    pos, tgt = b["mlm_positions"][w], b["mlm_targets"][w]
    row = np.repeat(np.arange(n_rows), w.sum(1))
    np.testing.assert_array_equal(tgt, rows[row, pos])  # targets are the original ids
    assert (tgt >= 5).all()  # never [PAD], [CLS], [SEP], [MASK] or [UNK]
    assert len(set(zip(row, pos))) == len(pos)  # no position twice
    # Nothing outside the selected positions changes; specials and padding stay put.
    changed = b["inputs"] != rows
    assert not changed[rows < 5].any()
    selected = np.zeros_like(changed)
    selected[row, pos] = True
    assert not changed[~selected].any()
    # 80% [MASK], 10% a random ordinary token, 10% unchanged (the random draw can hit the
    # original id itself with probability 1/(vocab-5), negligible here).
    after = b["inputs"][row, pos]
    share_mask = (after == tok.mask_id).mean()
    share_same = (after == tgt).mean()
    share_random = ((after != tok.mask_id) & (after != tgt)).mean()
    n = len(after)  # ~14,000 selections: 4 standard errors
    assert abs(share_mask - 0.8) < 4 * np.sqrt(0.8 * 0.2 / n)
    assert abs(share_random - 0.1) < 4 * np.sqrt(0.09 / n) + 1 / tok.vocab_size
    assert abs(share_same - 0.1) < 4 * np.sqrt(0.09 / n) + 1 / tok.vocab_size
    assert (after[after != tok.mask_id] >= 5).all()
    # Selection is uniform over positions: the first and second halves of rows share alike.
    first = (pos < lengths[row] / 2 + 1).mean()
    assert abs(first - 0.5) < 0.03


def test_masking_is_a_pure_function_of_seed_step_and_example(tok):
    rows = mlm.frame([np.arange(5, 45)] * 4, 48, tok.cls_id, tok.sep_id, tok.pad_id)
    a = mlm.mask_batch(rows, np.array([0, 1, 2, 3]), 0, 5, tok)
    b = mlm.mask_batch(rows[::-1].copy(), np.array([3, 2, 1, 0]), 0, 5, tok)
    for k in a:  # the same example gets the same mask wherever it sits in the batch
        np.testing.assert_array_equal(a[k], b[k][::-1])
    assert not np.array_equal(a["mlm_positions"][0], a["mlm_positions"][1])  # examples differ
    c = mlm.mask_batch(rows, np.array([0, 1, 2, 3]), 0, 6, tok)
    assert not np.array_equal(a["mlm_positions"], c["mlm_positions"])  # steps differ


def test_masking_needs_wordpiece_specials():
    class Chars:
        special_ids = ()

    with pytest.raises(ValueError, match="wordpiece"):
        mlm.mask_batch(np.zeros((1, 8), np.int32), np.zeros(1), 0, 0, Chars())


def test_masking_with_a_hugging_face_bert_vocabulary():
    """bert-base-uncased's order: [PAD] 0, [unused..] 1-99, [UNK] [CLS] [SEP] [MASK] 100-103.
    The specials are never selected nor drawn; every other id, 1-99 included, is ordinary."""
    class HFBert:
        special_ids, mask_id, vocab_size = (0, 100, 101, 102, 103), 103, 160

    rng = np.random.default_rng(0)
    ordinary = np.setdiff1d(np.arange(160), HFBert.special_ids)
    np.testing.assert_array_equal(mlm.ordinary_ids(HFBert()), ordinary)
    lengths = rng.integers(10, 46, 2000)
    rows = mlm.frame([rng.choice(ordinary, n) for n in lengths], 48, 101, 102, 0)
    b = mlm.mask_batch(rows, np.arange(len(rows)), seed=0, step=1, tokenizer=HFBert())
    w = b["mlm_weights"] > 0
    np.testing.assert_array_equal(w.sum(1), np.maximum(1, np.floor(0.15 * lengths + 0.5)))
    row = np.repeat(np.arange(len(rows)), w.sum(1))
    tgt, after = b["mlm_targets"][w], b["inputs"][row, b["mlm_positions"][w]]
    assert not np.isin(tgt, HFBert.special_ids).any() and (tgt < 100).any()
    drawn = after[(after != 103) & (after != tgt)]
    assert len(drawn) > 100 and not np.isin(drawn, HFBert.special_ids).any()
    assert (drawn < 100).any() and (drawn > 103).any()  # drawn from both sides of the specials
    assert not (b["inputs"] != rows)[np.isin(rows, HFBert.special_ids)].any()


def test_lmjax_wordpiece_ordinary_ids_follow_the_specials(tok):
    np.testing.assert_array_equal(mlm.ordinary_ids(tok), np.arange(5, tok.vocab_size))
