"""Verifiable rewards for reinforcement learning (task=grpo): a completion scored against its
record, in plain Python on the host.

A reward is a function `(prompt, completion, record) -> float`: `prompt` is the question as the
record gives it (before the template), `completion` the model's text cut at its stop string,
`record` the whole JSONL record (its `response` / `answers`, or any field a user's function
reads). `rl.reward` names one or several, comma-separated, whose values add up:

    exact_match      1 if the completion equals a reference answer after SQuAD's
                     normalisation (lmjax/eval/qa.py), else 0
    numeric          1 if the first number in the completion equals the reference's number
    format           1 if the stripped completion matches `rl.format_pattern` (re.fullmatch)
    mymodule:score   a user's function, imported by its dotted path

    rl.reward="exact_match"   rl.reward="numeric,format"   rl.reward="rewards_lib:length_bonus"
"""

from __future__ import annotations

import importlib
import math
import re
from typing import Callable

from lmjax.eval import qa

Reward = Callable[[str, str, dict], float]

_NUMBER = re.compile(r"[-+]?(?:\d+(?:,\d{3})*(?:\.\d*)?|\.\d+)")


def exact_match(prompt: str, completion: str, record: dict) -> float:
    return qa.best(qa.exact_match, completion, qa.references(record))


def first_number(text: str) -> float | None:
    """The first number written in `text` ('1,024', '-3.5', '42.'), or None."""
    m = _NUMBER.search(text)
    return None if m is None else float(m.group(0).replace(",", ""))


def numeric(prompt: str, completion: str, record: dict) -> float:
    """1 if the completion's first number equals a reference's (to 1e-6 relative)."""
    got = first_number(completion)
    if got is None:
        return 0.0
    refs = [first_number(r) for r in qa.references(record)]
    return float(any(r is not None and math.isclose(got, r, rel_tol=1e-6, abs_tol=1e-9)
                     for r in refs))


def format_match(pattern: str) -> Reward:
    """1 if the stripped completion matches `pattern` whole (re.fullmatch)."""
    compiled = re.compile(pattern, re.DOTALL)

    def reward(prompt: str, completion: str, record: dict) -> float:
        return float(compiled.fullmatch(completion.strip()) is not None)

    return reward


BUILTIN = ("exact_match", "numeric", "format")


def _one(name: str, pattern: str) -> Reward:
    if name == "exact_match":
        return exact_match
    if name == "numeric":
        return numeric
    if name == "format":
        if not pattern:
            raise ValueError("rl.reward 'format' needs rl.format_pattern, a regular expression "
                             "the whole completion must match, e.g. '\\d+'.")
        try:
            return format_match(pattern)
        except re.error as e:
            raise ValueError(f"rl.format_pattern={pattern!r} is not a regular expression "
                             f"({e}).") from None
    module, sep, attr = name.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"rl.reward: {name!r} is neither a built-in reward "
                         f"({', '.join(BUILTIN)}) nor a function's dotted path "
                         "('mymodule:score').")
    try:
        fn = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"rl.reward: cannot import {name!r} ({e}); put the module on "
                         "PYTHONPATH and name a function in it, 'mymodule:score'.") from None
    if not callable(fn):
        raise ValueError(f"rl.reward: {name!r} is not a function.")
    return fn


def load(spec: str, pattern: str = "") -> Reward:
    """The reward `rl.reward` names: the sum of its comma-separated parts."""
    names = [n.strip() for n in str(spec).split(",") if n.strip()]
    if not names:
        raise ValueError("rl.reward is empty: name a reward, e.g. 'exact_match' or "
                         "'mymodule:score'.")
    parts = [_one(n, pattern) for n in names]
    if len(parts) == 1:
        return parts[0]

    def total(prompt: str, completion: str, record: dict) -> float:
        return sum(float(f(prompt, completion, record)) for f in parts)

    return total
