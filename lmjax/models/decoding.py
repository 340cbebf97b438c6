"""Decoding with a cache: prefill, one step, the jitted loop and sampling, for any model that
keeps one; and `score`, the log-probability of given tokens (evaluation harnesses, OpenAI's
echo and logprobs, preference losses).

The decoder knows a model only through this protocol (GPT and RNNLM implement it):

- `model.init_cache(batch, slots, start=None)`: an empty cache (a pytree) for `batch` rows of
  up to `slots` tokens; row b's real tokens begin at slot `start[b]` (left padding before).
- `model.apply({"params": p}, tokens, positions=positions, cache=cache)` -> (logits, cache):
  `tokens` (batch, length) appended to the cache. A negative position marks padding: the
  model keeps it out of every real token's view (a transformer masks or later overwrites its
  keys, a recurrent model's state passes over it).
- the cache's `per_row()` (each row its own next slot, for rows that joined at different
  times) and `insert(row, slot, length)` (a one-row cache, `length` tokens long, into row
  `slot`): what the serving engine needs.
- `model.cfg.block_size`: the context, which the Generator and the engine size caches by.

Prompts of different lengths are left-padded to a common length. Each row keeps its own
positions (0 at its first real token), so a row's tokens are the same whether it runs alone
or in a batch. Sampling settings and random keys are per row too, which lets a server batch
unrelated requests together.
"""

from __future__ import annotations

import functools

import chex
import flax.struct
import jax
import jax.numpy as jnp

NEVER = -2     # a stop-sequence row that matches nothing (unused entry)
WILDCARD = -1  # left padding inside a stop sequence: matches any token


@flax.struct.dataclass
class KVCache:
    """A transformer's keys and values, every layer's, for decoding one token at a time.

    Slots are shared by the whole batch: slot `index` is where the next token goes. Rows are
    left-padded, so row b's real tokens start at slot `start[b]`; earlier slots are never read.
    Heads come before slots, the layout the attention products read without a transpose; they
    are the key/value heads, which may be fewer than the query heads (grouped-query attention).
    An `index` of shape (batch,) gives every row its own next slot instead: the serving
    engine's rows are independent requests that joined at different times.
    """
    k: jax.Array      # (layers, batch, heads, slots, head_dim)
    v: jax.Array
    start: jax.Array  # (batch,) int32
    index: jax.Array  # () int32, or (batch,) int32: each row's own next slot

    @classmethod
    def zeros(cls, *, layers: int, heads: int, head_dim: int, batch: int, slots: int, dtype,
              start: jax.Array | None = None) -> "KVCache":
        shape = (layers, batch, heads, slots, head_dim)
        start = jnp.zeros((batch,), jnp.int32) if start is None else start.astype(jnp.int32)
        return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype), start=start,
                   index=jnp.zeros((), jnp.int32))

    def per_row(self) -> "KVCache":
        return self.replace(index=jnp.broadcast_to(self.index, self.start.shape))

    def insert(self, row: "KVCache", slot: jax.Array, length: jax.Array) -> "KVCache":
        """Row 0 of `row` (its first `length` slots hold a prompt) into row `slot`, whose next
        token then goes to slot `length`."""
        where = (0, slot, 0, 0, 0)
        k = jax.lax.dynamic_update_slice(self.k, row.k.astype(self.k.dtype), where)
        v = jax.lax.dynamic_update_slice(self.v, row.v.astype(self.v.dtype), where)
        return self.replace(k=k, v=v, start=self.start.at[slot].set(row.start[0]),
                            index=self.index.at[slot].set(length))


@flax.struct.dataclass
class Sampling:
    """Per-row sampling settings: temperature 0 is greedy; top_k 0 and top_p 1 switch those off."""
    temperature: jax.Array  # (batch,) float32
    top_k: jax.Array        # (batch,) int32
    top_p: jax.Array        # (batch,) float32
    keys: jax.Array         # (batch, 2) uint32: each row's own random key
    offset: jax.Array       # (batch,) int32: tokens the row generated before this call


@flax.struct.dataclass
class DecodeState:
    cache: object        # the model's (init_cache)
    last: jax.Array      # (batch,) the newest token, fed in at the next step
    position: jax.Array  # (batch,) its position id
    step: jax.Array      # () tokens generated so far, `last` included
    done: jax.Array      # (batch,) a stop sequence was generated, or the row's limit reached
    limit: jax.Array     # (batch,) how many tokens each row wants
    recent: jax.Array    # (batch, L) the last L tokens, for stop-sequence checks
    stops: jax.Array     # (batch, K, L) right-aligned stop sequences (WILDCARD/NEVER padded)
    sampling: Sampling


def filter_logits(logits: jax.Array, temperature, top_k, top_p) -> jax.Array:
    """Scaled logits with everything outside the top-k, then outside the top-p mass, at -inf.

    logits (batch, vocab); settings (batch,). Top-p keeps the smallest set of most likely
    tokens whose probability (after the top-k cut) reaches p, as Hugging Face does.
    """
    vocab = logits.shape[-1]
    scaled = logits / jnp.maximum(temperature, 1e-6)[:, None]
    ranked = -jnp.sort(-scaled, axis=-1)  # descending
    k = jnp.where(top_k > 0, jnp.minimum(top_k, vocab), vocab)
    ranked = jnp.where(jnp.arange(vocab)[None] < k[:, None], ranked, -jnp.inf)
    probs = jax.nn.softmax(ranked, axis=-1)
    mass_before = jnp.cumsum(probs, axis=-1) - probs
    # (Rounding can leave the mass before the tokens cut by top-k just under 1: clip to k.)
    keep = jnp.clip(jnp.sum(mass_before < top_p[:, None], axis=-1), 1, k)
    threshold = jnp.take_along_axis(ranked, (keep - 1)[:, None], axis=-1)
    return jnp.where(scaled < threshold, -jnp.inf, scaled)


def categorical(keys: jax.Array, logits: jax.Array) -> jax.Array:
    """A draw from softmax(logits) per row (batch, vocab) -> (batch,), by inverting the row's
    cumulative distribution with one uniform number per row. jax.random.categorical draws a
    Gumbel number per vocabulary entry: on CPUs that was half of a 64-row decoding step at a
    vocabulary of 2,048 (benchmarks/rollout_speed.py). A token of probability 0 is never drawn."""
    u = 1.0 - jax.vmap(jax.random.uniform)(keys)  # in (0, 1]
    cdf = jnp.cumsum(jax.nn.softmax(logits, axis=-1), axis=-1)
    index = jnp.sum(cdf < (u * cdf[:, -1])[:, None], axis=-1)
    return jnp.minimum(index, logits.shape[-1] - 1).astype(jnp.int32)


def sample(logits: jax.Array, sampling: Sampling, step: jax.Array) -> jax.Array:
    """The next token of every row: argmax where temperature is 0, else a filtered draw."""
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw(filtered):
        # The n-th token of a row uses draw n of the row's key, whatever the batch around it.
        keys = jax.vmap(jax.random.fold_in)(sampling.keys, sampling.offset + step)
        drawn = categorical(keys, filtered)
        return jnp.where(sampling.temperature > 0, drawn, greedy)

    def scaled():  # what filter_logits keeps when no row cuts (fp32 rounding aside)
        return draw(logits / jnp.maximum(sampling.temperature, 1e-6)[:, None])

    def cut():
        return draw(filter_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p))

    # All-greedy batches skip the draw; batches where no sampled row has a top-k or top-p cut
    # (GRPO's rollouts) skip the vocabulary sort, which at a 150k vocabulary costs more than
    # the model's step. One conditional, as before: on GPUs each costs a host round trip.
    sampled = sampling.temperature > 0
    cuts = sampled & ((sampling.top_k > 0) | (sampling.top_p < 1))
    branch = jnp.where(jnp.any(cuts), 2, jnp.where(jnp.any(sampled), 1, 0))
    return jax.lax.switch(branch, [lambda: greedy, scaled, cut])


@functools.partial(jax.jit, static_argnames=("model", "slots"))
def prefill(model, params, tokens: jax.Array, start: jax.Array, end: jax.Array,
            sampling: Sampling, *, slots: int):
    """Runs prompts through the model once: (each row's first new token (batch,), the cache).

    Row b's prompt is tokens[b, start[b]:end[b]] (batch, P): left padding before it (prompts of
    different lengths in one batch), right padding after it (a prompt padded to a bucket
    length); neither is seen by the prompt's tokens. The cache holds `slots` tokens per row."""
    batch, plen = tokens.shape
    chex.assert_shape([start, end], (batch,))
    at = jnp.arange(plen)[None]
    positions = jnp.where(at < end[:, None], at - start[:, None], -1)  # padding: negative
    cache = model.init_cache(batch, slots, start)
    logits, cache = model.apply({"params": params}, tokens, positions=positions, cache=cache)
    last = jnp.take_along_axis(logits, (end - 1)[:, None, None], axis=1)[:, 0]
    return sample(last, sampling, jnp.zeros((), jnp.int32)), cache


def step(model, params, cache, last: jax.Array, position: jax.Array, sampling: Sampling,
         n: jax.Array):
    """One new token for every row: `last` (batch,) at `position` (batch,) into the cache,
    then sampled with draw `n` past each row's offset. Returns (tokens (batch,), cache)."""
    logits, cache = model.apply({"params": params}, last[:, None], positions=position[:, None],
                                cache=cache)
    return sample(logits[:, 0], sampling, n), cache


@flax.struct.dataclass
class Scores:
    """What `score` returns; entry [b, i] is about token i + 1 of row b, predicted from the
    tokens before it (token 0 has no prediction). Zero past each row's end."""
    logprobs: jax.Array      # (batch, length - 1) float32: log p(token i + 1 | tokens <= i)
    greedy: jax.Array        # (batch, length - 1) int32: the most likely token there
    top_logprobs: jax.Array  # (batch, length - 1, k) float32: the k most likely, descending
    top_ids: jax.Array       # (batch, length - 1, k) int32: their ids


def token_logprobs(logits: jax.Array, targets: jax.Array) -> jax.Array:
    """log p(target) under each position's logits, in float32: logits (..., vocab), targets
    (...). Pure and differentiable, for losses that need sequence log-probabilities (DPO)."""
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    return jnp.take_along_axis(logp, targets[..., None], axis=-1)[..., 0]


@functools.partial(jax.jit, static_argnames=("model", "top_k"))
def score(model, params, tokens: jax.Array, lengths: jax.Array, *, top_k: int = 0) -> Scores:
    """How likely each token of each row is given the ones before it, in one forward pass.

    tokens (batch, length): row b is tokens[b, :lengths[b]], right-padded with anything. The
    model reads tokens[:, :-1] with plain causal attention (the training forward pass), so
    padding after a row's end is never seen by its tokens, and a row may be one token longer
    than the model's context. With `top_k` > 0 the k most likely tokens at each position come
    too (OpenAI's top logprobs). The sum of a row's logprobs over a span (a continuation, a
    response) is that span's log-likelihood given what precedes it.
    """
    batch, length = tokens.shape
    chex.assert_shape(lengths, (batch,))
    logits = model.apply({"params": params}, tokens[:, :-1]).astype(jnp.float32)
    live = jnp.arange(1, length)[None] < lengths[:, None]
    if top_k:
        top_values, top_ids = jax.lax.top_k(jax.nn.log_softmax(logits, axis=-1), top_k)
    else:
        top_values = jnp.zeros((batch, length - 1, 0), jnp.float32)
        top_ids = jnp.zeros((batch, length - 1, 0), jnp.int32)
    return Scores(logprobs=jnp.where(live, token_logprobs(logits, tokens[:, 1:]), 0.0),
                  greedy=jnp.where(live, jnp.argmax(logits, axis=-1), 0).astype(jnp.int32),
                  top_logprobs=jnp.where(live[..., None], top_values, 0.0),
                  top_ids=jnp.where(live[..., None], top_ids, 0).astype(jnp.int32))


def _stopped(recent: jax.Array, stops: jax.Array, generated: jax.Array) -> jax.Array:
    """(batch,) whether the last tokens end with one of the row's stop sequences, counting only
    sequences no longer than what was generated (a stop inside the prompt does not count)."""
    match = jnp.all((stops == WILDCARD) | (stops == recent[:, None, :]), axis=-1)
    length = jnp.sum(stops != WILDCARD, axis=-1)
    live = stops[..., -1] != NEVER
    return jnp.any(match & live & (length <= generated), axis=-1)


def _push(recent: jax.Array, token: jax.Array) -> jax.Array:
    return jnp.concatenate([recent[:, 1:], token[:, None]], axis=1)


@functools.partial(jax.jit, static_argnames=("model", "slots"))
def begin(model, params, tokens: jax.Array, start: jax.Array, limit: jax.Array,
          stops: jax.Array, sampling: Sampling, *, slots: int) -> DecodeState:
    """`prefill` of left-padded prompts (batch, P), as the state `decode` continues: row b
    begins at `start[b]` and stops after `limit[b]` tokens or a stop sequence."""
    batch, plen = tokens.shape
    first, cache = prefill(model, params, tokens, start, jnp.full((batch,), plen, jnp.int32),
                           sampling, slots=slots)
    recent = _push(jnp.full((batch, stops.shape[-1]), NEVER, jnp.int32), first)
    one = jnp.ones((), jnp.int32)
    done = _stopped(recent, stops, one) | (limit <= 1)
    return DecodeState(cache=cache, last=first, position=plen - start, step=one, done=done,
                       limit=limit, recent=recent, stops=stops, sampling=sampling)


@functools.partial(jax.jit, static_argnames=("model", "capacity"), donate_argnums=(2,))
def decode(model, params, state: DecodeState, steps: jax.Array, *, capacity: int):
    """Up to `steps` (<= capacity) more tokens per row, one per `while_loop` iteration; stops
    early once every row is done. Returns (state, tokens (batch, capacity), tokens written)."""
    batch = state.last.shape[0]
    out = jnp.zeros((batch, capacity), jnp.int32)

    def cond(carry):
        state, _, i = carry
        return (i < steps) & ~jnp.all(state.done)

    def body(carry):
        state, out, i = carry
        nxt, cache = step(model, params, state.cache, state.last, state.position,
                          state.sampling, state.step)
        recent = _push(state.recent, nxt)
        n = state.step + 1
        done = state.done | _stopped(recent, state.stops, n) | (n >= state.limit)
        out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], i, axis=1)
        state = state.replace(cache=cache, last=nxt, position=state.position + 1, step=n,
                              done=done, recent=recent)
        return state, out, i + 1

    state, out, written = jax.lax.while_loop(cond, body, (state, out, jnp.zeros((), jnp.int32)))
    return state, out, written
