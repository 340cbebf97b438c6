"""Token shards on disk, read memory-mapped as one long sequence of tokens.

Formats read (`data.name='shards'`, `data.shards=<glob or prepared folder>`):
- llm.c's `.bin`: a header of 256 int32 (magic 20240520, version, token count), then the tokens,
  uint16 for version 1 (GPT-2) and uint32 for version 2 (LLaMA 3). lmjax's own preparation
  (`lmjax prepare_data`) writes this format too, plus `manifest.json`.
- nanoGPT's headerless `train.bin` / `val.bin`: uint16 tokens only.

`ShardedTokens` looks like a 1-D array to `data/batches.py` (`len`, integer-array indexing), so
training windows are drawn across all shards as a pure function of (seed, step) and each
process reads only the pages of its own rows.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os

import numpy as np

from lmjax.data.tokenizers import BPETokenizer, load_tokenizer_file

MAGIC = 20240520
HEADER_INTS = 256
DTYPES = {1: np.uint16, 2: np.uint32}  # llm.c's header version -> token type
GPT2_VOCAB = 50257  # llm.c's and nanoGPT's uint16 shards hold GPT-2 token ids
MANIFEST = "manifest.json"


class ShardError(ValueError):
    """A shard that is missing, truncated or of an unknown format."""


def write_shard(path: str, tokens: np.ndarray) -> str:
    """Writes tokens in llm.c's format, atomically (a temporary file renamed into place);
    returns the file's sha256. Tokens already uint16/uint32 and contiguous are written and
    hashed where they lie: no copy of a shard is made."""
    version = 1 if tokens.dtype == np.uint16 else 2
    header = np.zeros(HEADER_INTS, np.int32)
    header[:3] = MAGIC, version, len(tokens)
    body = np.ascontiguousarray(tokens, DTYPES[version])
    digest = hashlib.sha256(header)
    digest.update(body)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(header)
        f.write(body)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return digest.hexdigest()


def file_sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            h.update(block)
    return h.hexdigest()


def open_shard(path: str) -> np.ndarray:
    """The tokens of one shard, memory-mapped (llm.c format by its magic, else nanoGPT's)."""
    size = os.path.getsize(path)
    header = np.fromfile(path, np.int32, count=HEADER_INTS) if size >= 4 * HEADER_INTS else None
    if header is not None and header[0] == MAGIC:
        version, count = int(header[1]), int(header[2])
        if version not in DTYPES:
            raise ShardError(f"{path}: llm.c shard version {version} is not 1 (uint16) or 2 "
                             "(uint32).")
        dtype = DTYPES[version]
        expected = 4 * HEADER_INTS + count * np.dtype(dtype).itemsize
        if size != expected:
            raise ShardError(f"{path}: the header promises {count:,} tokens ({expected:,} bytes) "
                             f"but the file has {size:,} bytes: it is truncated or still being "
                             "written; copy it again.")
        return np.memmap(path, dtype, "r", offset=4 * HEADER_INTS, shape=(count,))
    if size % 2 or size == 0:
        raise ShardError(f"{path}: neither an llm.c shard (magic {MAGIC}) nor nanoGPT's "
                         "headerless uint16 tokens (its size is odd or zero).")
    return np.memmap(path, np.uint16, "r")


class ShardedTokens:
    """Several shards seen as one 1-D token array (windows may run from one into the next,
    as they run across documents inside one shard)."""

    def __init__(self, shards: list[np.ndarray], names: list[str]):
        if not shards:
            raise ShardError("no shards given.")
        # Plain ndarray views of the memory maps: np.memmap's own indexing costs microseconds.
        self.shards, self.names = [np.asarray(s) for s in shards], names
        self.bounds = np.cumsum([0] + [len(s) for s in shards])
        self.dtype = np.result_type(*[s.dtype for s in shards])
        self.shape = (int(self.bounds[-1]),)

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, idx) -> np.ndarray:
        idx = np.asarray(idx)
        if idx.dtype.kind not in "iu":
            raise TypeError("ShardedTokens takes integer indices (arrays of token positions).")
        if idx.ndim == 2 and idx.shape[1] > 1 and (np.diff(idx, axis=1) == 1).all():
            return self._windows(idx[:, 0], idx.shape[1])  # batches.windows: rows of runs
        flat = idx.ravel()
        which = np.searchsorted(self.bounds, flat, side="right") - 1
        out = np.empty(flat.shape, self.dtype)
        for s in np.unique(which):
            mask = which == s
            out[mask] = self.shards[s][flat[mask] - self.bounds[s]]
        return out.reshape(idx.shape)

    def _windows(self, starts: np.ndarray, length: int) -> np.ndarray:
        """Rows of `length` consecutive tokens: a slice per row (and per shard where a window
        runs on into the next one); faster than gathering every position."""
        out = np.empty((len(starts), length), self.dtype)
        which = np.searchsorted(self.bounds, starts, side="right") - 1
        for row, (start, s) in enumerate(zip(starts.tolist(), which.tolist())):
            at, done = start - int(self.bounds[s]), 0
            while done < length:
                piece = self.shards[s][at:at + length - done]
                out[row, done:done + len(piece)] = piece
                done, s, at = done + len(piece), s + 1, 0
        return out

    def head(self, n: int) -> "ShardedTokens":
        """The first n tokens (all when n is 0 or beyond the end)."""
        if n <= 0 or n >= len(self):
            return self
        keep, names = [], []
        for shard, name in zip(self.shards, self.names):
            if n <= 0:
                break
            keep.append(shard[:n])
            names.append(name)
            n -= len(shard)
        return ShardedTokens(keep, names)


def _paths(pattern: str, field: str) -> list[str]:
    found = sorted(glob.glob(os.path.expanduser(pattern)))
    if not found:
        raise ShardError(f"data.{field}={pattern!r}: no file matches.")
    return found


def open_tokens(paths: list[str]) -> ShardedTokens:
    return ShardedTokens([open_shard(p) for p in paths], paths)


def find(cfg, folder: str = "") -> tuple[list[str], list[str], str]:
    """(training shard paths, validation shard paths, prepared folder or '') for a `data` config:
    a folder with a manifest (lmjax's preparation), or globs (llm.c, nanoGPT)."""
    spec = folder or os.path.expanduser(cfg.shards)
    if not spec:
        raise ShardError("data.name='shards' needs --config.data.shards=<glob of .bin shards> "
                         "(e.g. 'fineweb10B/fineweb_train_*.bin' or 'data/train.bin') or a "
                         "folder written by `lmjax prepare_data`.")
    if os.path.isdir(spec):
        manifest = read_manifest(spec)
        if manifest is None or not manifest.get("complete"):
            raise ShardError(f"data.shards={cfg.shards!r}: the folder has no finished "
                             f"{MANIFEST}; run `lmjax prepare_data` again to "
                             "finish it, or give a glob of .bin files.")
        by_split = {s: [os.path.join(spec, r["file"]) for r in manifest["shards"]
                        if r["split"] == s] for s in ("train", "val")}
        return by_split["train"], by_split["val"], spec
    train = _paths(spec, "shards")
    val_spec = cfg.get("val_shards", "") or os.path.basename(spec).replace("train", "val")
    if not cfg.get("val_shards", ""):
        if "train" not in os.path.basename(spec):
            raise ShardError(f"data.shards={cfg.shards!r}: give the validation shards with "
                             "--config.data.val_shards=<glob> (they are found by replacing "
                             "'train' with 'val' in the file pattern when it has 'train').")
        val_spec = os.path.join(os.path.dirname(spec), val_spec)
    val = _paths(val_spec, "val_shards")
    if set(train) & set(val):
        raise ShardError("data.shards and data.val_shards match the same files: "
                         f"{sorted(set(train) & set(val))[:3]}.")
    return train, val, ""


def read_manifest(directory: str) -> dict | None:
    path = os.path.join(directory, MANIFEST)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        return json.load(f)


def ids_tokenizer_json(vocab_size: int) -> dict:
    """A Hugging Face tokenizer.json whose tokens are the ids themselves ('464 3290' <-> [464,
    3290]): shards without their tokenizer still train, and prompts/samples are token ids."""
    return {"version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
            "normalizer": None, "pre_tokenizer": {"type": "WhitespaceSplit"},
            "post_processor": None, "decoder": None,
            "model": {"type": "WordLevel", "unk_token": "0",
                      "vocab": {str(i): i for i in range(vocab_size)}}}


def check_ids(tokens: ShardedTokens, vocab_size: int, what: str) -> None:
    """Token ids beyond the vocabulary would index past the embedding table silently: check
    the first million tokens of the first shard (cheap, and catches the wrong tokenizer)."""
    sample = np.asarray(tokens.shards[0][:1_000_000])
    if sample.size and int(sample.max()) >= vocab_size:
        raise ShardError(f"{tokens.names[0]} holds token id {int(sample.max())}, beyond the "
                         f"vocabulary of {vocab_size} ({what}): set data.vocab_size or "
                         "data.tokenizer_file to the tokenizer the shards were made with.")


def load(cfg, log=print, folder: str = "") -> dict:
    """The fields of `prepare.Prepared` for `data.name='shards'` (or a prepared `folder`):
    memory-mapped shards, the tokenizer (data.tokenizer_file, the prepared folder's, or ids
    only), and a summary."""
    from tokenizers import Tokenizer  # noqa: lazy (only shards without a tokenizer need it)

    train_paths, val_paths, folder = find(cfg, folder)
    train, val = open_tokens(train_paths), open_tokens(val_paths)
    val = val.head(cfg.get("max_val_tokens", 0))
    tokenizer_file = cfg.get("tokenizer_file", "") or (
        os.path.join(folder, "tokenizer.json") if folder else "")
    if tokenizer_file:
        tokenizer, what = load_tokenizer_file(tokenizer_file), tokenizer_file
    else:
        vocab = cfg.get("vocab_size", 0) or (GPT2_VOCAB if train.dtype == np.uint16 else 0)
        if not vocab:
            raise ShardError("uint32 shards without a tokenizer: set data.vocab_size or "
                             "data.tokenizer_file.")
        tokenizer = BPETokenizer(Tokenizer.from_str(json.dumps(ids_tokenizer_json(vocab))))
        what = f"ids only, vocabulary {vocab}"
        log(f"Shards without a tokenizer: prompts and samples are token ids ({what}); give "
            "GPT-2's tokenizer.json as data.tokenizer_file for text.")
    check_ids(train, tokenizer.vocab_size, what)
    meta = {"source": cfg.name, "tokenizer": what, "vocab_size": tokenizer.vocab_size,
            "train_shards": len(train.shards), "val_shards": len(val.shards),
            "train_tokens": len(train), "val_tokens": len(val),
            "val_names": [os.path.basename(n) for n in val.names]}
    directory = folder or os.path.dirname(os.path.abspath(train_paths[0]))
    return dict(train=train, val=val, tokenizer=tokenizer, directory=directory, meta=meta)
