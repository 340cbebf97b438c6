"""Text in, text out: batching, padding, stop strings and long outputs around the decoder
(lmjax/models/decoding.py), for any model that implements its protocol (GPT, the decoder
family, LSTM/GRU).

    gen = Generator(model, params, tokenizer)
    gen.generate([Request("ROMEO:", max_new_tokens=200, temperature=0.8, top_k=40)])

Shapes are rounded up (batch to a power of two, prompt and output lengths to multiples of 16
and 64, the stop table to 4 or 8 sequences of a power of two tokens, at most the context) so
that a server sees a bounded handful of compiled programs, not one per request.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from lmjax.models import decoding as dec
from lmjax.models.decoder import Decoder
from lmjax.models.gpt import GPT, unrolled, unstack_layers


@dataclasses.dataclass(frozen=True)
class Request:
    """One prompt and how to continue it. temperature 0 is greedy decoding."""
    prompt: str
    max_new_tokens: int = 100
    temperature: float = 0.0
    top_k: int = 0          # 0: no top-k cut
    top_p: float = 1.0      # 1: no nucleus cut
    seed: int = 0
    stop: tuple[str, ...] = ()  # generation ends at the first of these (not included)
    prompt_ids: tuple[int, ...] | None = None  # the prompt already encoded (the server's)


@dataclasses.dataclass
class Completion:
    text: str
    tokens: list[int]
    finish_reason: str | None = None  # 'stop' | 'length'; None while still generating
    emitted: int = 0                  # characters of `text` already handed to a stream

    def take_new(self, hold: int = 0) -> str:
        """The text not yet streamed, keeping back `hold` characters that could still turn out
        to be the start of a stop string."""
        end = len(self.text) if self.finish_reason else max(self.emitted, len(self.text) - hold)
        new, self.emitted = self.text[self.emitted:end], end
        return new


def inference_model(model, params):
    """The same function, laid out for decoding: (model, params).

    - Layers unrolled: a model trained with `scan_layers` decodes with one block per layer
      (the same parameters, restacked once), so each step runs straight-line code instead of
      an inner loop that slices every layer's weights out of the stack.
    - Weight matrices and embeddings stored in the compute dtype (e.g. bfloat16 when training
      kept float32 masters): the model casts them to it before every use, so this computes
      exactly the same and reads half the bytes per token. Vectors (norms, biases) stay as they
      are, since LayerNorm applies its scale in float32.
    Quantized (qwix) models are left alone.
    """
    if type(model) not in (GPT, Decoder):
        return model, params
    cfg = model.cfg
    if cfg.scan_layers:
        params, model = unstack_layers(params, cfg.num_layers), unrolled(model)
    dtype = jnp.dtype(cfg.dtype)
    if dtype.itemsize < 4:
        params = jax.tree.map(lambda x: x.astype(dtype) if x.ndim >= 2 and jnp.issubdtype(
            x.dtype, jnp.floating) else x, params)
    return model, params


def _round_up(x: int, m: int) -> int:
    return -(-x // m) * m


MAX_DEVICE_STOPS = 8  # stop sequences matched on the device per row; the host checks them all


def pow2(x: int) -> int:
    """x rounded up to a power of two (batch shapes: few compiled programs)."""
    return 1 << max(0, (x - 1).bit_length())


class Generator:
    """A model with its parameters and tokenizer, ready to continue prompts."""

    def __init__(self, model, params, tokenizer, max_batch: int = 64, stop_at_eot: bool = True):
        if not hasattr(model, "init_cache"):
            kind = type(getattr(model, "cfg", model)).__name__.replace("Config", "")
            raise ValueError(f"the Generator decodes language models (GPT, Llama, ...); a "
                             f"{kind} model does not continue text.")
        self.model, self.params = inference_model(model, params)
        self.tokenizer = tokenizer
        self.block_size = model.cfg.block_size
        self.max_batch = max_batch
        # A tokenizer with an end-of-text token (byte-level BPE): generating it ends a row.
        self.eot_id = getattr(tokenizer, "eot_id", None) if stop_at_eot else None
        self.eot = tokenizer.decode([self.eot_id]) if self.eot_id is not None else None

    def encode(self, text: str) -> np.ndarray:
        return np.asarray(self.tokenizer.encode(text), np.int32)

    def encode_prompt(self, text: str) -> np.ndarray:
        """The ids a text prompt reaches the model as: bos first where the tokenizer's own
        (Hugging Face) encoding puts it there, as transformers and vLLM do (Llama 3's
        <|begin_of_text|>, Gemma's <bos>: without it their outputs drift). Chat renderings
        carry their own bos in the template and use `encode`."""
        ids = self.encode(text)
        if getattr(self.tokenizer, "adds_bos", False):
            ids = np.concatenate([np.asarray([self.tokenizer.bos_id], np.int32), ids])
        return ids

    def prompt(self, request: Request) -> np.ndarray:
        if request.prompt_ids is not None:
            return np.asarray(request.prompt_ids, np.int32)
        return self.encode_prompt(request.prompt)

    def prefill(self, contexts: Sequence[np.ndarray], requests: Sequence[Request],
                produced: Sequence[int], limits: Sequence[int]) -> tuple[dec.DecodeState, int]:
        """Runs the contexts (one per request, left-padded into one batch) through the model.
        Returns the decoding state, which holds their cache and each row's first new token,
        and the cache room left for further tokens. `produced` counts each row's tokens so far
        (their sampling keys continue from there); `limits` caps each row's new tokens."""
        args = self._arrays(contexts, requests, produced, limits)
        capacity = _round_up(max(max(limits) - 1, 1), 64)
        state = dec.begin(self.model, self.params, *args, slots=args[0].shape[1] + capacity)
        return state, capacity

    def decode(self, state: dec.DecodeState, steps: int,
               capacity: int) -> tuple[dec.DecodeState, jax.Array, jax.Array]:
        """Up to `steps` more tokens for every row, in one jitted loop: (state, tokens
        (batch, steps), how many steps ran before every row stopped)."""
        return dec.decode(self.model, self.params, state, jnp.asarray(steps, jnp.int32),
                          capacity=capacity)

    # ---- token level -------------------------------------------------------------------

    def _arrays(self, contexts, requests, produced, limits):
        """Device inputs for one segment: left-padded tokens, sampling settings, stops."""
        batch = pow2(len(contexts))
        plen = _round_up(max(len(c) for c in contexts), 16)
        tokens = np.zeros((batch, plen), np.int32)
        start = np.full((batch,), plen - 1, np.int32)  # padding rows: one token, never read
        limit = np.ones((batch,), np.int32)
        temperature, top_p = np.zeros((batch,), np.float32), np.ones((batch,), np.float32)
        top_k, offset = np.zeros((batch,), np.int32), np.zeros((batch,), np.int32)
        keys = np.zeros((batch, 2), np.uint32)
        for b, (c, r) in enumerate(zip(contexts, requests)):
            tokens[b, plen - len(c):], start[b], limit[b] = c, plen - len(c), limits[b]
            temperature[b], top_k[b], top_p[b] = r.temperature, r.top_k, r.top_p
            keys[b], offset[b] = np.asarray(jax.random.PRNGKey(r.seed)), produced[b]
        stops = self.stop_table(requests, batch)
        sampling = dec.Sampling(temperature=jnp.asarray(temperature), top_k=jnp.asarray(top_k),
                                top_p=jnp.asarray(top_p), keys=jnp.asarray(keys),
                                offset=jnp.asarray(offset))
        return (jnp.asarray(tokens), jnp.asarray(start), jnp.asarray(limit), jnp.asarray(stops),
                sampling)

    def stop_table(self, requests: Sequence[Request], batch: int) -> np.ndarray:
        """(batch, count, width) token ids of each request's stop strings (end-of-text first),
        right-aligned (WILDCARD before, NEVER rows unused): what the device matches. Rows past
        the requests match nothing."""
        stop_ids = []
        for r in requests:
            seqs = [self.encode(s) for s in r.stop]
            if self.eot_id is not None:
                seqs.insert(0, np.array([self.eot_id], np.int32))
            # The device only ends rows early; `_absorb` cuts every stop string exactly. So a
            # stop longer than the context (it cannot complete within one segment on the
            # device) and any beyond the first few are left to the host alone.
            stop_ids.append([s for s in seqs if 0 < len(s) <= self.block_size]
                            [:MAX_DEVICE_STOPS])
        # A bounded set of shapes: 4 or 8 sequences, 8, 16, 32, ... tokens up to the context.
        count = max(4, pow2(max(len(s) for s in stop_ids)))
        width = min(max(8, pow2(max([len(x) for s in stop_ids for x in s] + [1]))),
                    self.block_size)
        stops = np.full((batch, count, width), dec.NEVER, np.int32)
        for b, seqs in enumerate(stop_ids):
            for k, s in enumerate(seqs):
                stops[b, k] = dec.WILDCARD
                stops[b, k, width - len(s):] = s[-width:]
        return stops

    def stream(self, requests: Sequence[Request], chunk: int = 0) -> Iterator[list[Completion]]:
        """Continues every request together; yields the completions (updated in place) after
        every `chunk` decoding steps (0: only once, at the end).

        A row whose prompt plus output fits the context gets exactly the tokens it would get
        alone. Longer outputs go in segments: when a row's context is full, its last 3/4 is run
        through the model again and decoding goes on from there.
        """
        n = len(requests)
        if not 0 < n <= self.max_batch:
            raise ValueError(f"{n} requests: give between 1 and {self.max_batch}.")
        prompts = [self.prompt(r) for r in requests]
        if any(len(p) == 0 for p in prompts):
            raise ValueError("an empty prompt: give at least one character (e.g. a newline).")
        rows = [Completion(text="", tokens=[]) for _ in requests]
        for row, r in zip(rows, requests):
            if r.max_new_tokens <= 0:
                row.finish_reason = "length"
        keep = [self.block_size - 1] * n  # a first segment keeps as much prompt as fits
        while True:
            active = [b for b in range(n) if rows[b].finish_reason is None]
            if not active:
                break
            contexts = [np.concatenate([prompts[b], rows[b].tokens]).astype(np.int32)[-keep[b]:]
                        for b in active]
            # Each row's positions stay inside the context: its own limit for this segment.
            limits = [min(requests[b].max_new_tokens - len(rows[b].tokens),
                          self.block_size - len(c)) for b, c in zip(active, contexts)]
            steps = max(limits)
            state, capacity = self.prefill(contexts, [requests[b] for b in active],
                                           [len(rows[b].tokens) for b in active], limits)
            taken = [0] * len(active)
            self._absorb(rows, requests, active, np.asarray(state.last)[:, None], taken, limits)
            if chunk > 0:
                yield rows
            left = steps - 1
            while left > 0 and any(rows[b].finish_reason is None and t < lim
                                   for b, t, lim in zip(active, taken, limits)):
                todo = min(left, chunk) if chunk > 0 else left
                state, out, written = self.decode(state, todo, capacity)
                written = int(written)
                if written == 0:  # every row stopped on the device
                    break
                self._absorb(rows, requests, active, np.asarray(out)[:, :written], taken, limits)
                left -= written
                if chunk > 0:
                    yield rows
            for b in active:
                keep[b] = max(1, self.block_size * 3 // 4)
        if chunk <= 0:
            yield rows

    def _absorb(self, rows, requests, active, block: np.ndarray, taken, limits) -> None:
        """Appends a block of new tokens (segment batch, t) to the rows still running, up to
        each row's limit in this segment."""
        for i, b in enumerate(active):
            new = block[i][:limits[i] - taken[i]]
            if rows[b].finish_reason is not None or len(new) == 0:
                continue
            taken[i] += len(new)
            self.extend(rows[b], requests[b], new)

    def stops(self, request: Request) -> list[str]:
        """The strings that end a request: its own, then end-of-text where there is one."""
        return list(request.stop) + ([self.eot] if self.eot else [])

    def extend(self, row: Completion, request: Request, new: Sequence[int]) -> None:
        """Appends new tokens to a row and ends it at its first stop string (cut from the
        text) or at max_new_tokens. The serving engine calls this after every step."""
        row.tokens.extend(int(t) for t in new)
        text = self.tokenizer.decode(row.tokens)
        hits = [(text.find(s), s) for s in self.stops(request) if s and s in text]
        if hits:
            pos, s = min(hits)
            # Keep the tokens up to the one that completed the stop string.
            while len(row.tokens) > 1 and s in self.tokenizer.decode(row.tokens[:-1])[pos:]:
                row.tokens.pop()
            row.text, row.finish_reason = text[:pos], "stop"
        else:
            row.text = text
            if len(row.tokens) >= request.max_new_tokens:
                row.finish_reason = "length"

    def generate(self, requests: Sequence[Request]) -> list[Completion]:
        """Continues the requests, max_batch at a time, and returns their completions."""
        out = []
        for i in range(0, len(requests), self.max_batch):
            for rows in self.stream(requests[i:i + self.max_batch]):
                pass
            out += rows
        return out
