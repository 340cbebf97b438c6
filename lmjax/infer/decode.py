"""KV-cache decoding on the device: one prefill, then one token per step inside `lax.while_loop`.

Prompts of different lengths are left-padded to a common length. Each row keeps its own
positions (0 at its first real token) and its cache slots before its first token are masked,
so a row's tokens are the same whether it runs alone or in a batch. Sampling settings and
random keys are per row too, which lets a server batch unrelated requests together.
"""

from __future__ import annotations

import functools

import chex
import flax.struct
import jax
import jax.numpy as jnp

from lmjax.models.gpt import KVCache

NEVER = -2     # a stop-sequence row that matches nothing (unused entry)
WILDCARD = -1  # left padding inside a stop sequence: matches any token


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
    cache: KVCache
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


def sample(logits: jax.Array, sampling: Sampling, step: jax.Array) -> jax.Array:
    """The next token of every row: argmax where temperature is 0, else a filtered draw."""
    logits = logits.astype(jnp.float32)
    greedy = jnp.argmax(logits, axis=-1).astype(jnp.int32)

    def draw():
        filtered = filter_logits(logits, sampling.temperature, sampling.top_k, sampling.top_p)
        # The n-th token of a row uses draw n of the row's key, whatever the batch around it.
        keys = jax.vmap(jax.random.fold_in)(sampling.keys, sampling.offset + step)
        drawn = jax.vmap(jax.random.categorical)(keys, filtered).astype(jnp.int32)
        return jnp.where(sampling.temperature > 0, drawn, greedy)

    # All-greedy batches skip the vocabulary sort.
    return jax.lax.cond(jnp.any(sampling.temperature > 0), draw, lambda: greedy)


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
def prefill(model, params, tokens: jax.Array, start: jax.Array, limit: jax.Array,
            stops: jax.Array, sampling: Sampling, *, slots: int) -> DecodeState:
    """Runs the left-padded prompts (batch, P) through the model once, fills the cache and
    samples each row's first new token. `start[b]` is row b's first real token; row b stops
    after `limit[b]` tokens or a stop sequence."""
    batch, plen = tokens.shape
    chex.assert_shape(start, (batch,))
    cache = KVCache.zeros(model.cfg, batch, slots, start)
    positions = jnp.maximum(jnp.arange(plen)[None] - start[:, None], 0)
    logits, cache = model.apply({"params": params}, tokens, positions=positions, cache=cache)
    first = sample(logits[:, -1], sampling, jnp.zeros((), jnp.int32))
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
        logits, cache = model.apply({"params": params}, state.last[:, None],
                                    positions=state.position[:, None], cache=state.cache)
        nxt = sample(logits[:, 0], state.sampling, state.step)
        recent = _push(state.recent, nxt)
        step = state.step + 1
        done = state.done | _stopped(recent, state.stops, step) | (step >= state.limit)
        out = jax.lax.dynamic_update_slice_in_dim(out, nxt[:, None], i, axis=1)
        state = state.replace(cache=cache, last=nxt, position=state.position + 1, step=step,
                              done=done, recent=recent)
        return state, out, i + 1

    state, out, written = jax.lax.while_loop(cond, body, (state, out, jnp.zeros((), jnp.int32)))
    return state, out, written
