"""Tokenizers saved beside the prepared data: characters, a byte-level BPE or a WordPiece (BERT)
trained on the corpus, or a pretrained Hugging Face tokenizer read from a local directory.

Byte-level BPE (Hugging Face `tokenizers`, the GPT-2 scheme) is lossless: every string, newlines
and all, decodes back to itself, which sentencepiece's line-based training would not give us.

A pretrained tokenizer (`data.tokenizer_file=<dir>`, `load_tokenizer_file`) is whatever
`save_pretrained` or `huggingface-cli download` left in the directory: `tokenizer.json`, or for
BERT only `vocab.txt` (+ `tokenizer_config.json`), rebuilt with BertTokenizer's own rules
(lowercasing and accent stripping as the saved config says, each CJK character its own word),
or for GPT-2 `vocab.json` + `merges.txt`. Either way it becomes one `tokenizer.json` in the
data cache and the run directory, and its special tokens ([CLS]/[SEP]/[PAD]/[MASK],
`<|endoftext|>`) keep the ids of its own vocabulary.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterable, Sequence

import numpy as np

UNK = "\x00"  # the character that stands for any character unseen in training
CONFIG = "tokenizer_config.json"  # a Hugging Face tokenizer's settings, beside tokenizer.json


class CharTokenizer:
    """One id per character seen in the training text; id 0 is for unseen characters."""

    kind = "char"

    def __init__(self, chars: str):
        self.chars = chars
        self._index = {c: i for i, c in enumerate(chars)}
        self.vocab_size = len(chars)

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 0) -> "CharTokenizer":
        del vocab_size  # the vocabulary is whatever characters the corpus has
        seen = set()
        for t in texts:
            seen.update(t)
        seen.discard(UNK)
        return cls(UNK + "".join(sorted(seen)))

    def encode(self, text: str) -> np.ndarray:
        return np.fromiter((self._index.get(c, 0) for c in text), dtype=np.int32, count=len(text))

    def decode(self, ids: Sequence[int]) -> str:
        return "".join(self.chars[int(i)] for i in ids)

    def save(self, directory: str) -> None:
        with open(os.path.join(directory, "tokenizer.json"), "w") as f:
            json.dump({"kind": self.kind, "chars": self.chars}, f)


class BPETokenizer:
    """A Hugging Face `tokenizers` BPE (or Unigram): byte-level as GPT-2's, Llama 3's and
    Qwen's, or SentencePiece-style as Mistral's and Gemma's. `<|endoftext|>`, or the
    tokenizer's own eos, separates documents and ends generation.

    `special` holds what tokenizer_config.json says beside tokenizer.json: the bos/eos/pad/unk
    tokens, whether encoding adds bos, and the chat template (a jinja2 string, exposed as
    `chat_template`: what chat rendering uses). They are saved with it (`save`), so the run
    directory and the data cache keep them. `encode` adds no special tokens (texts are encoded
    in pieces and joined); `adds_bos` says whether Hugging Face's encoding would put bos first.
    """

    kind = "bpe"
    EOT = "<|endoftext|>"
    SPECIAL = ("bos_token", "eos_token", "pad_token", "unk_token")

    def __init__(self, tok, special: dict | None = None):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        self.special = {k: v for k, v in (special or {}).items() if v is not None}
        ids = {k: tok.token_to_id(v) for k, v in self.special.items() if k in self.SPECIAL}
        missing = [self.special[k] for k, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer_config.json names special tokens the vocabulary does "
                             f"not have: {', '.join(map(repr, missing))}.")
        self.eot_id = ids.get("eos_token", tok.token_to_id(self.EOT))
        self.bos_id, self.pad_id = ids.get("bos_token"), ids.get("pad_token")
        self.chat_template = self.special.get("chat_template")
        self.adds_bos = self.bos_id is not None and tok.encode("a").ids[:1] == [self.bos_id]

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> "BPETokenizer":
        from tokenizers import ByteLevelBPETokenizer

        tok = ByteLevelBPETokenizer()
        tok.train_from_iterator(
            texts, vocab_size=vocab_size, min_frequency=2, show_progress=False,
            special_tokens=[cls.EOT])
        return cls(tok._tokenizer)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> None:
        """tokenizer.json, and tokenizer_config.json when there are special settings: the
        pair transformers' AutoTokenizer.from_pretrained(directory) reads."""
        self._tok.save(os.path.join(directory, "tokenizer.json"))
        if self.special:
            config = {"tokenizer_class": "PreTrainedTokenizerFast", **self.special}
            with open(os.path.join(directory, CONFIG), "w", encoding="utf-8") as f:
                json.dump(config, f, indent=1, ensure_ascii=False)


class WordPieceTokenizer:
    """BERT's WordPiece with its special tokens; `[SEP]` separates documents.

    Trained here, it is cased and its special tokens take the first ids in a fixed order, so
    `[PAD]` is 0 as in BERT. A pretrained vocabulary keeps its own ids (bert-base-uncased:
    [PAD] 0, [UNK] 100, [CLS] 101, [SEP] 102, [MASK] 103). Whitespace is not kept: decoding
    gives words joined by single spaces (fine for masked-LM and classification, not for sampling).
    """

    kind = "wordpiece"
    SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")

    def __init__(self, tok):
        self._tok = tok
        self.vocab_size = tok.get_vocab_size()
        ids = [tok.token_to_id(t) for t in self.SPECIAL]
        missing = [t for t, i in zip(self.SPECIAL, ids) if i is None]
        if missing:
            raise ValueError(f"this WordPiece vocabulary has no {', '.join(missing)}: BERT "
                             f"needs {', '.join(self.SPECIAL)} in its vocab.txt/tokenizer.json.")
        self.pad_id, self.unk_id, self.cls_id, self.sep_id, self.mask_id = ids
        self.special_ids = tuple(sorted(ids))
        self.eot_id = self.sep_id  # documents are separated by [SEP] in prepared token arrays

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 8192) -> "WordPieceTokenizer":
        from tokenizers import BertWordPieceTokenizer

        # Cased: capitals carry meaning here (speaker names, verse line starts).
        tok = BertWordPieceTokenizer(lowercase=False, strip_accents=False, clean_text=True)
        tok.train_from_iterator(texts, vocab_size=vocab_size, min_frequency=2,
                                show_progress=False, special_tokens=list(cls.SPECIAL),
                                limit_alphabet=500)
        return cls(tok._tokenizer)

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self._tok.encode(text, add_special_tokens=False).ids, dtype=np.int32)

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """Many texts at once (in parallel threads)."""
        return [np.asarray(e.ids, np.int32)
                for e in self._tok.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int]) -> str:
        return self._tok.decode([int(i) for i in ids], skip_special_tokens=False)

    def save(self, directory: str) -> None:
        self._tok.save(os.path.join(directory, "tokenizer.json"))

    def save_hf(self, directory: str, max_length: int = 512) -> None:
        """tokenizer.json plus the tokenizer_config.json and vocab.txt that transformers'
        BertTokenizer(Fast).from_pretrained reads: without the config it would lowercase by
        default, whatever the vocabulary's normalizer says."""
        self.save(directory)
        norm = json.loads(self._tok.to_str()).get("normalizer") or {}
        lower = bool(norm.get("lowercase", False))
        special = dict(zip(("pad_token", "unk_token", "cls_token", "sep_token", "mask_token"),
                           self.SPECIAL))
        config = {"tokenizer_class": "BertTokenizer", "do_lower_case": lower,
                  "strip_accents": norm.get("strip_accents"),
                  "tokenize_chinese_chars": bool(norm.get("handle_chinese_chars", True)),
                  "model_max_length": max_length, **special}
        with open(os.path.join(directory, "tokenizer_config.json"), "w") as f:
            json.dump(config, f, indent=1)
        with open(os.path.join(directory, "special_tokens_map.json"), "w") as f:
            json.dump(special, f, indent=1)
        vocab = self._tok.get_vocab(with_added_tokens=True)
        with open(os.path.join(directory, "vocab.txt"), "w", encoding="utf-8") as f:
            f.writelines(t + "\n" for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]))


KINDS = {"char": CharTokenizer, "bpe": BPETokenizer, "wordpiece": WordPieceTokenizer}


def load_tokenizer(directory: str):
    """The tokenizer saved as `tokenizer.json` in `directory`."""
    return load_tokenizer_file(os.path.join(directory, "tokenizer.json"))


def load_tokenizer_file(path: str):
    """A tokenizer file: lmjax's character table, or a Hugging Face `tokenizers` file (a
    WordPiece or a BPE, e.g. GPT-2's own tokenizer.json); or a Hugging Face tokenizer
    directory (`load_hf_tokenizer`)."""
    if os.path.isdir(path):
        return load_hf_tokenizer(path)
    with open(path) as f:
        spec = json.load(f)
    if spec.get("kind") == "char":
        return CharTokenizer(spec["chars"])
    from tokenizers import Tokenizer  # noqa: lazy (the char default does not need it)

    tok = Tokenizer.from_file(path)
    if spec.get("model", {}).get("type") == "WordPiece":
        return WordPieceTokenizer(tok)
    return BPETokenizer(tok, special_settings(os.path.dirname(path)))


# The files of a Hugging Face tokenizer directory that decide how it tokenizes (and chats).
HF_FILES = ("tokenizer.json", "vocab.txt", CONFIG, "special_tokens_map.json", "vocab.json",
            "merges.txt", "chat_template.jinja", "chat_template.json")
# What a tokenizer.json's neighbours add to it (tokenizer_digest of a file counts them too).
SETTINGS_FILES = (CONFIG, "special_tokens_map.json", "chat_template.jinja",
                  "chat_template.json")


def load_hf_tokenizer(directory: str):
    """A pretrained tokenizer saved in `directory`: its tokenizer.json if it has one, else a
    BERT vocab.txt or GPT-2 vocab.json + merges.txt, with tokenizer_config.json's settings."""
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    config = _read_json(path("tokenizer_config.json"))
    if os.path.exists(path("tokenizer.json")):
        tok = load_tokenizer_file(path("tokenizer.json"))
        if isinstance(tok, WordPieceTokenizer):
            _apply_bert_settings(tok._tok, config)
        return tok
    if os.path.exists(path("vocab.txt")):
        return WordPieceTokenizer(_bert_wordpiece(path("vocab.txt"), config))
    if os.path.exists(path("vocab.json")) and os.path.exists(path("merges.txt")):
        from tokenizers import ByteLevelBPETokenizer  # noqa: lazy (as above)

        tok = ByteLevelBPETokenizer(path("vocab.json"), path("merges.txt"),
                                    add_prefix_space=bool(config.get("add_prefix_space")))
        return BPETokenizer(tok._tokenizer, special_settings(directory))
    raise ValueError(f"{directory} holds no tokenizer: expected tokenizer.json, vocab.txt "
                     "(BERT WordPiece) or vocab.json + merges.txt (GPT-2), as "
                     "save_pretrained or huggingface-cli download write them.")


def _bert_wordpiece(vocab_file: str, config: dict):
    """The `tokenizers` pipeline transformers' BertTokenizer builds from a vocab.txt (its
    convert_slow_tokenizer): BERT's normalizer (clean text, CJK characters spaced out, lowercase
    and accents as configured; strip_accents None follows lowercase), whitespace-and-punctuation
    pre-tokenizer, WordPiece with '##' continuations and words over 100 characters unknown."""
    from tokenizers import BertWordPieceTokenizer  # noqa: lazy (the char default does not need it)

    lower = config.get("do_lower_case", True)  # BertTokenizer's default
    special = {k: _content(config.get(f"{k}_token", f"[{k.upper()}]"))
               for k in ("unk", "sep", "cls", "pad", "mask")}
    with open(vocab_file, encoding="utf-8") as f:
        vocab = {line.rstrip("\n") for line in f}
    missing = [t for t in WordPieceTokenizer.SPECIAL if t not in vocab]
    if missing or set(special.values()) != set(WordPieceTokenizer.SPECIAL):
        raise ValueError(f"{vocab_file} has no {', '.join(missing) or 'standard special tokens'}:"
                         f" lmjax's BERT needs {', '.join(WordPieceTokenizer.SPECIAL)}.")
    tok = BertWordPieceTokenizer(
        vocab_file, **{f"{k}_token": v for k, v in special.items()}, clean_text=True,
        handle_chinese_chars=config.get("tokenize_chinese_chars", True),
        strip_accents=config.get("strip_accents"), lowercase=lower, wordpieces_prefix="##")
    return tok._tokenizer


def _apply_bert_settings(tok, config: dict) -> None:
    """transformers' BertTokenizer follows tokenizer_config.json's do_lower_case /
    strip_accents / tokenize_chinese_chars over the normalizer saved in tokenizer.json: so do we."""
    norm = json.loads(tok.to_str()).get("normalizer") or {}
    keys = {"do_lower_case": "lowercase", "strip_accents": "strip_accents",
            "tokenize_chinese_chars": "handle_chinese_chars"}
    if norm.get("type") != "BertNormalizer" or not any(
            k in config and config[k] != norm.get(v) for k, v in keys.items()):
        return
    from tokenizers.normalizers import BertNormalizer  # noqa: lazy (as above)

    settings = {v: config.get(k, norm.get(v)) for k, v in keys.items()}
    tok.normalizer = BertNormalizer(clean_text=norm.get("clean_text", True), **settings)


def special_settings(directory: str) -> dict:
    """What lmjax keeps of a Hugging Face tokenizer's settings beside its tokenizer.json:
    the special tokens (tokenizer_config.json, else special_tokens_map.json) and the chat
    template (tokenizer_config.json's, else chat_template.jinja / chat_template.json, as
    transformers saves it; of several named templates, 'default')."""
    path = lambda name: os.path.join(directory, name)  # noqa: E731
    config, tokens = _read_json(path(CONFIG)), _read_json(path("special_tokens_map.json"))
    out = {k: _content(config.get(k, tokens.get(k))) for k in BPETokenizer.SPECIAL
           if config.get(k, tokens.get(k)) is not None}
    template = config.get("chat_template") or _read_json(path("chat_template.json")).get(
        "chat_template")
    if template is None and os.path.exists(path("chat_template.jinja")):
        with open(path("chat_template.jinja"), encoding="utf-8") as f:
            template = f.read()
    if isinstance(template, list):  # [{"name": ..., "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in template if isinstance(t, dict)}
        template = named.get("default")
    if template:
        out["chat_template"] = template
    return out


def _content(token) -> str:
    """A special token as tokenizer_config.json writes it: a string, or (older transformers)
    an AddedToken dict with its 'content'."""
    return token.get("content", "") if isinstance(token, dict) else str(token)


def _read_json(path: str) -> dict:
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        value = json.load(f)
    return value if isinstance(value, dict) else {}


def tokenizer_digest(path: str) -> str:
    """A hash of what decides a tokenizer file's or directory's tokenization (its contents,
    not its name): a key for data caches."""
    h = hashlib.sha256()
    if os.path.isdir(path):
        for name in HF_FILES:
            if os.path.exists(os.path.join(path, name)):
                with open(os.path.join(path, name), "rb") as f:
                    h.update(name.encode() + b"\0" + f.read() + b"\0")
    else:
        with open(path, "rb") as f:
            h.update(f.read())
        for name in SETTINGS_FILES:  # the settings load_tokenizer_file reads beside it
            near = os.path.join(os.path.dirname(path), name)
            if os.path.exists(near):
                with open(near, "rb") as f:
                    h.update(name.encode() + b"\0" + f.read() + b"\0")
    return h.hexdigest()
