"""Pretrained Hugging Face tokenizers from a local directory, checked against transformers'
own tokenizers on English, Chinese and mixed text (tiny vocabularies written here, offline)."""

import json

import ml_collections
import numpy as np
import pytest

from lmjax.config import ConfigError, check_text_data
from lmjax.data import corpora
from lmjax.data.prepare import prepare
from lmjax.data.tokenizers import (BPETokenizer, WordPieceTokenizer, load_tokenizer,
                                   load_tokenizer_file)

transformers = pytest.importorskip("transformers")

# BERT's layout: [PAD] 0, [unused*], [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103, then words.
WORDS = ("the a is this movie film good bad great not at all i love it , . ! ? cafe café naive "
         "play ##ing ##ed ##s fun ##ny hello world python jax 我 爱 北 京 天 安 门 这 部 电 影 "
         "很 好 看 不 东 ##京 和 の 映 画").split()
VOCAB = (["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + WORDS)
TEXTS = ["This movie is GOOD, not bad at all!", "I loved playing it... Café naïve FUNNY?",
         "这部电影很好看", "这部电影不好看！", "我爱北京天安门", "東京の映画",
         "我爱 Python 和 JAX! 这部 movie 很好看", "  hello\tworld \n", "",
         "a" * 120 + " the"]


def _vocab_dir(path, **config):
    path.mkdir()
    (path / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    if config:
        (path / "tokenizer_config.json").write_text(json.dumps(
            {"tokenizer_class": "BertTokenizer", **config}))
    return path


@pytest.mark.parametrize("config", [{}, {"do_lower_case": False},
                                    {"do_lower_case": True, "strip_accents": False},
                                    {"tokenize_chinese_chars": False}])
def test_bert_vocab_txt_matches_transformers(tmp_path, config):
    d = str(_vocab_dir(tmp_path / "bert", **config))
    ours = load_tokenizer_file(d)
    hf = transformers.BertTokenizerFast.from_pretrained(d)
    assert isinstance(ours, WordPieceTokenizer)
    assert (ours.pad_id, ours.unk_id, ours.cls_id, ours.sep_id, ours.mask_id) == (
        0, 100, 101, 102, 103) == (hf.pad_token_id, hf.unk_token_id, hf.cls_token_id,
                                   hf.sep_token_id, hf.mask_token_id)
    unknown = 0
    for text in TEXTS:
        want = hf(text)["input_ids"]
        assert [ours.cls_id, *ours.encode(text).tolist(), ours.sep_id] == want, text
        unknown += want.count(ours.unk_id)
    assert [x.tolist() for x in ours.encode_batch(TEXTS)] == [ours.encode(t).tolist()
                                                              for t in TEXTS]
    # The settings matter, so the comparison could fail: uncased strips "é" and finds "cafe".
    cafe = ours.encode("café").tolist()
    assert cafe == ([VOCAB.index("café")] if config.get("do_lower_case") is False else
                    [VOCAB.index("cafe")] if config.get("strip_accents") is not False else
                    [VOCAB.index("café")])
    if config.get("tokenize_chinese_chars") is False:
        assert ours.encode("我爱").tolist() == [ours.unk_id]  # one unknown word, not two chars
    else:
        assert ours.encode("我爱").tolist() == [VOCAB.index("我"), VOCAB.index("爱")]
    assert unknown < 20


def test_saved_run_tokenizer_and_export_keep_the_tokenization(tmp_path):
    d = str(_vocab_dir(tmp_path / "cased", do_lower_case=False))
    tok = load_tokenizer_file(d)
    (tmp_path / "run").mkdir()
    tok.save(str(tmp_path / "run"))  # what the data cache and run directory keep
    again = load_tokenizer(str(tmp_path / "run"))
    (tmp_path / "export").mkdir()
    tok.save_hf(str(tmp_path / "export"))  # what to_hf writes
    hf = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "export"))
    for text in TEXTS:
        ids = tok.encode(text).tolist()
        assert again.encode(text).tolist() == ids
        assert hf(text)["input_ids"] == [101, *ids, 102], text  # still cased: "GOOD" unknown
    assert again.special_ids == (0, 100, 101, 102, 103) and again.eot_id == 102
    # transformers follows tokenizer_config.json over tokenizer.json's normalizer: so do we.
    config = tmp_path / "export" / "tokenizer_config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "do_lower_case": True}))
    lowered = load_tokenizer_file(str(tmp_path / "export"))
    hf = transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "export"))
    assert lowered.encode("GOOD Café").tolist() == hf("GOOD Café")["input_ids"][1:-1] == [
        VOCAB.index("good"), VOCAB.index("cafe")]


def test_prepare_with_a_tokenizer_directory(tmp_path):
    d = _vocab_dir(tmp_path / "bert")
    text = tmp_path / "corpus.txt"
    text.write_text("这部电影很好看。 This film is great fun!\n" * 50, encoding="utf-8")
    cfg = ml_collections.ConfigDict(dict(
        name="files", files=str(text), val_fraction=0.2, tokenizer="wordpiece", vocab_size=64,
        tokenizer_file=str(d), cache_dir=str(tmp_path / "cache"), text_key="text",
        max_examples=0, val_split=""))
    p = prepare(cfg, log=lambda s: None)
    want = load_tokenizer_file(str(d)).encode("这部电影很好看。 This film is great fun!")
    assert list(p.train[:len(want)]) == want.tolist() and p.tokenizer.cls_id == 101
    assert p.meta["tokenizer"] == "wordpiece" and int(p.train.max()) < len(VOCAB)
    # The cache key follows the tokenizer's contents: another vocabulary, another cache.
    key = corpora.fingerprint(cfg)
    (d / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": False}))
    assert corpora.fingerprint(cfg) != key


def test_gpt2_vocab_and_merges(tmp_path):
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["Who speaks the line? Hamlet speaks it.\n"] * 20, vocab_size=300,
                            special_tokens=["<|endoftext|>"], show_progress=False)
    d = tmp_path / "gpt2"
    d.mkdir()
    bpe.save_model(str(d))  # vocab.json + merges.txt, as the original GPT-2 release
    ours = load_tokenizer_file(str(d))
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(d))
    assert isinstance(ours, BPETokenizer) and ours.eot_id == hf.convert_tokens_to_ids(
        "<|endoftext|>") == 0
    for text in ("Who speaks the line?", " Hamlet\nspeaks it. 东京"):
        assert ours.encode(text).tolist() == hf(text)["input_ids"]
        assert ours.decode(ours.encode(text)) == text


def test_a_directory_without_a_tokenizer_and_the_hf_spelling_are_readable_errors(
        tmp_path, load_config):
    with pytest.raises(ValueError, match="holds no tokenizer: expected tokenizer.json, vocab.txt"):
        load_tokenizer_file(str(tmp_path))
    (tmp_path / "v").mkdir()
    (tmp_path / "v" / "vocab.txt").write_text("[PAD]\n[UNK]\nhello\n")
    with pytest.raises(ValueError, match=r"no \[CLS\], \[SEP\], \[MASK\]"):
        load_tokenizer_file(str(tmp_path / "v"))
    cfg = load_config("tiny")
    cfg.data.tokenizer = "hf:/models/bert"
    with pytest.raises(ConfigError, match="data.tokenizer_file='/models/bert'"):
        check_text_data(cfg.data)


def test_masked_lm_pretraining_on_a_pretrained_bert_vocabulary(tmp_path, load_config):
    """bert-base's order ([PAD] 0, [UNK]..[MASK] 100-103): masking never picks a special."""
    from lmjax.tasks import make_task

    text = tmp_path / "corpus.txt"
    text.write_text("this movie is good . " * 200)
    cfg = load_config("tiny", "bert.py")
    cfg.data.update(name="files", files=str(text), tokenizer_file=str(_vocab_dir(tmp_path / "b")),
                    cache_dir=str(tmp_path / "cache"))
    task = make_task(cfg, log=lambda s: None)
    assert task.tokenizer.special_ids == (0, 100, 101, 102, 103)
    batch = task.train_batch(0, 0, 1)
    targets = batch["mlm_targets"][batch["mlm_weights"] > 0]
    assert len(targets) and not np.isin(targets, task.tokenizer.special_ids).any()
    assert (batch["inputs"] == 103).any()  # [MASK] is bert-base's id


# -- the decoder families' tokenizers (Llama 3 / Qwen byte-level, Mistral / Gemma SentencePiece) --

CHAT = [{"role": "system", "content": "Answer in verse."},
        {"role": "user", "content": "Who is Romeo?"},
        {"role": "assistant", "content": "A Montague."}]
SENTENCES = ["To be, or not to be", " that is the question:\n\nWhether", "naïve café 東京 🙂",
             "ROMEO: But soft!", "  two spaces", "unseen wörds: xyzzy"]


@pytest.mark.parametrize("style", ["bytelevel", "metaspace"])
def test_a_decoder_tokenizer_keeps_its_special_tokens_and_chat_template(tmp_path, hf_tokenizer,
                                                                       style):
    from lmjax import rundir

    hf = hf_tokenizer(tmp_path / "hf", style)
    ours = load_tokenizer_file(str(tmp_path / "hf"))
    assert isinstance(ours, BPETokenizer)
    assert (ours.bos_id, ours.eot_id, ours.pad_id) == (hf.bos_token_id, hf.eos_token_id,
                                                       hf.pad_token_id)
    assert ours.eot_id != ours.bos_id and ours.chat_template == hf.chat_template
    for text in SENTENCES:
        assert ours.encode(text).tolist() == hf(text, add_special_tokens=False)["input_ids"]
        assert ours.adds_bos and hf(text)["input_ids"][0] == ours.bos_id
        assert ours.decode(ours.encode(text)) == hf.decode(hf(text, add_special_tokens=False)[
            "input_ids"])
    if style == "bytelevel":  # lossless: every string decodes back to itself
        assert all(ours.decode(ours.encode(t)) == t for t in SENTENCES)
    # The template renders the model's own chat format (jinja2), as transformers does.
    rendered = hf.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)
    import jinja2
    assert jinja2.Template(ours.chat_template).render(
        messages=CHAT, add_generation_prompt=True, bos_token=hf.bos_token,
        eos_token=hf.eos_token) == rendered
    assert ours.encode(rendered).tolist() == hf(rendered, add_special_tokens=False)["input_ids"]

    # The run directory keeps all of it (tokenizer.json + tokenizer_config.json), and
    # transformers reads the pair back to the same tokenizer.
    run = tmp_path / "run"
    rundir.write(str(run), rundir.Assets(task="lm", model={}, config={}, tokenizer=ours))
    again = rundir.read(str(run)).tokenizer
    assert (again.bos_id, again.eot_id, again.pad_id, again.chat_template) == (
        ours.bos_id, ours.eot_id, ours.pad_id, ours.chat_template)
    back = transformers.AutoTokenizer.from_pretrained(str(run))
    assert back.chat_template == hf.chat_template and back.eos_token == hf.eos_token
    for text in SENTENCES:
        assert back(text)["input_ids"] == hf(text)["input_ids"]


def test_the_chat_template_may_sit_in_its_own_file(tmp_path, hf_tokenizer):
    """transformers 4.43+ may write chat_template.jinja beside tokenizer_config.json."""
    hf_tokenizer(tmp_path, "bytelevel")
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    (tmp_path / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    assert load_tokenizer_file(str(tmp_path)).chat_template == "{{ messages[0]['content'] }}"
    assert load_tokenizer_file(str(tmp_path / "tokenizer.json")).chat_template is not None


def test_prepare_separates_documents_with_the_tokenizers_eos(tmp_path, hf_tokenizer):
    hf = hf_tokenizer(tmp_path / "hf", "metaspace")
    docs = tmp_path / "docs"
    docs.mkdir()
    for i, text in enumerate(SENTENCES * 4):
        (docs / f"{i:02d}.txt").write_text(text)
    cfg = ml_collections.ConfigDict(dict(
        name="files", files=str(docs / "*.txt"), val_fraction=0.25, tokenizer="bpe",
        vocab_size=0, tokenizer_file=str(tmp_path / "hf"), cache_dir=str(tmp_path / "cache"),
        text_key="text", max_examples=0, val_split=""))
    p = prepare(cfg, log=lambda s: None)
    eos = hf.eos_token_id
    assert p.tokenizer.eot_id == eos and (np.asarray(p.train) == eos).sum() == len(
        p.train_doc_lengths)
    assert p.tokenizer.chat_template == hf.chat_template  # the cache keeps the settings too
