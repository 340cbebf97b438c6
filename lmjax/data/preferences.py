"""Preference records for DPO in TRL's shapes, encoded the way SFT encodes its examples
(lmjax/data/sft.py: the template, the end marker, prompt and answer tokenized apart):

    {"prompt": "In which play does Prospero appear?", "chosen": "The Tempest",
     "rejected": "Macbeth"}
    {"prompt": [{"role": "user", "content": "..."}],
     "chosen": [{"role": "assistant", "content": "..."}], "rejected": [...]}
    {"chosen": [...whole chat...], "rejected": [...whole chat...]}   # implicit prompt

A string prompt goes through the template; each answer is followed by the end marker and is
the only part that counts (answer-only log-probabilities, as SFT's loss). Messages are rendered
by SFT's chat path (`sft.pieces`: lmjax/data/chat.py, the tokenizer's Hugging Face chat
template where it has one), and only the final assistant message counts; with an
implicit prompt, both chats must agree up to it. A record may carry "answers" (references for
exact match at the end of training; otherwise the chosen answer is the reference).
"""

from __future__ import annotations

import numpy as np

from lmjax.data import sft
from lmjax.data.chat import HFChat
from lmjax.data.sft import Example, SFTDataError

Pair = tuple[Example, Example]  # (chosen, rejected)


def _is_chat(x) -> bool:
    return isinstance(x, list) and all(isinstance(m, dict) for m in x)


def _parts(record: dict, where: str) -> tuple[list | str, list | str, list | str]:
    """(prompt, chosen, rejected): three strings, or three lists of messages."""
    at = f"{where}: " if where else ""
    chosen, rejected = record.get("chosen"), record.get("rejected")
    if "prompt" not in record and _is_chat(chosen) and _is_chat(rejected):
        if not chosen or not rejected or chosen[:-1] != rejected[:-1]:
            raise SFTDataError(f"{at}with an implicit prompt, 'chosen' and 'rejected' must be "
                               "chats that differ only in their last message.")
        return chosen[:-1], chosen[-1:], rejected[-1:]
    prompt = record.get("prompt")
    if all(isinstance(x, str) for x in (prompt, chosen, rejected)):
        return prompt, chosen, rejected
    if all(_is_chat(x) for x in (prompt, chosen, rejected)):
        return prompt, chosen, rejected
    raise SFTDataError(f"{at}a preference record needs 'prompt', 'chosen' and 'rejected', all "
                       "strings or all lists of messages (or chats 'chosen' and 'rejected' "
                       f"alone); got keys {sorted(record)}.")


def pieces(record: dict, template: str, end: str, where: str = "",
           hf: HFChat | None = None) -> tuple[list, list]:
    """The chosen and the rejected example as SFT pieces [(text, counts), ...]; `hf` renders
    messages as sft.pieces does."""
    prompt, chosen, rejected = _parts(record, where)
    if isinstance(prompt, str):
        head = [(sft.format_prompt(template, prompt), False)]
        return head + [(chosen + end, True)], head + [(rejected + end, True)]
    out = []
    for answer in (chosen, rejected):
        if len(answer) != 1 or answer[0].get("role") != "assistant":
            raise SFTDataError(f"{where + ': ' if where else ''}'chosen' and 'rejected' must "
                               "each hold one assistant message.")
        parts = sft.pieces({"messages": prompt + answer}, template, end, where, hf)
        out.append([(t, False) for t, _ in parts[:-1]] + parts[-1:])
    return out[0], out[1]


def encode(tokenizer, record: dict, template: str, end: str, max_len: int,
           where: str = "", hf: HFChat | None = None) -> Pair | None:
    """Both examples, at most `max_len` tokens each (the prompt loses its beginning first), or
    None when an answer alone does not fit."""
    chosen, rejected = pieces(record, template, end, where, hf)
    pair = sft.encode(tokenizer, chosen, max_len), sft.encode(tokenizer, rejected, max_len)
    return None if None in pair else pair


def as_qa(record: dict) -> dict:
    """The record as SFT's question answering reads it (the chosen answer is the reference)."""
    prompt, chosen, _ = _parts(record, "")
    if isinstance(prompt, str):
        return {"prompt": prompt, "response": chosen,
                **({"answers": record["answers"]} if record.get("answers") else {})}
    return {"messages": prompt + chosen}


def rows(pairs: list[Pair], length: int) -> dict[str, np.ndarray]:
    """chosen_* and rejected_* arrays of sft.rows (one example per row, padded to `length`)."""
    out = {}
    for i, side in enumerate(("chosen", "rejected")):
        out.update({f"{side}_{k}": v for k, v in sft.rows([p[i] for p in pairs], length).items()})
    return out
