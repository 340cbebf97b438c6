import numpy as np

from lmjax.data.tokenizers import BPETokenizer, CharTokenizer, load_tokenizer

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n"


def test_char_round_trip_and_unknown(tmp_path):
    tok = CharTokenizer.train([TEXT])
    ids = tok.encode(TEXT)
    assert ids.dtype == np.int32 and tok.decode(ids) == TEXT
    assert tok.encode("Z")[0] == 0  # unseen character -> the unknown id
    tok.save(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert isinstance(again, CharTokenizer) and list(again.encode(TEXT)) == list(ids)


def test_bpe_round_trip_is_lossless(tmp_path):
    tok = BPETokenizer.train([TEXT * 50], vocab_size=300)
    ids = tok.encode(TEXT)
    assert len(ids) < len(TEXT)  # it learned merges
    assert tok.decode(ids) == TEXT  # newlines and spaces survive
    odd = "naïve — ünïcode\ttabs\n"
    assert tok.decode(tok.encode(odd)) == odd  # byte-level: nothing is unknown
    tok.save(str(tmp_path))
    again = load_tokenizer(str(tmp_path))
    assert list(again.encode(TEXT)) == list(ids) and again.eot_id == tok.eot_id
