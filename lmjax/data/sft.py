"""Supervised fine-tuning data: prompt/response pairs or chat messages, a template, packing.

An example is a list of pieces `(text, is_response)`. The template turns a question into the
prompt text (`format_prompt`); the model learns only the response pieces (each followed by the
end marker), never the prompt:

    {"prompt": "Who speaks the line '...'?", "response": "Romeo"}
    {"messages": [{"role": "system", "content": "..."}, {"role": "user", "content": "..."},
                  {"role": "assistant", "content": "..."}, ...]}

The default template is plain QA, `Question: {prompt}\\nAnswer: {response}`, with the end
marker "\\n\\n" after each response: a blank line works with every tokenizer (characters
included), never occurs inside a one-line answer, and is the natural separator between
few-shot examples. Generation stops at the run's stop strings (by default the end marker).
A chat is rendered by lmjax/data/chat.py, the rendering /v1/chat/completions uses too: by
default as consecutive QA turns (each user message goes through the template's prompt part,
each assistant message is a response, learned, a system message is a prompt line of its own),
or with the tokenizer's Hugging Face chat template where the run has one; either way only the
assistant messages are learned.

Prompt and response are tokenized separately and concatenated: at inference the prompt is
tokenized alone and the model continues it, so training sees the same token boundary.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from lmjax.config import require
from lmjax.data import sources
from lmjax.data.chat import DEFAULT_END, DEFAULT_TEMPLATE  # noqa: F401 (used from here too)
from lmjax.data.chat import ROLES, ChatError, ChatFormat, HFChat, qa_prompt


class SFTDataError(ValueError):
    pass


def check_template(template: str) -> None:
    if template.count("{response}") != 1 or not template.endswith("{response}"):
        raise SFTDataError(f"sft.template={template!r}: it must end with '{{response}}' (once), "
                           "e.g. 'Question: {prompt}\\nAnswer: {response}'.")
    if template.count("{prompt}") != 1:
        raise SFTDataError(f"sft.template={template!r}: it must hold '{{prompt}}' once.")


def format_prompt(template: str, question: str) -> str:
    """The text the model continues to answer `question`: the template up to `{response}`.

    Plain replacement, not str.format, so braces in a question are kept as they are."""
    check_template(template)
    return qa_prompt(template, question)


def pieces(record: dict, template: str, end: str, where: str = "",
           hf: HFChat | None = None) -> list[tuple[str, bool]]:
    """One JSONL record -> [(text, is_response), ...] (see the module docstring). A chat is
    rendered with the Hugging Face template `hf` (chat.hf_chat of the run's tokenizer), or
    else lmjax's default with `template` and `end`."""
    at = f"{where}: " if where else ""
    if "messages" in record:
        msgs = record["messages"]
        if not isinstance(msgs, list) or not msgs:
            raise SFTDataError(f"{at}'messages' must be a non-empty list of "
                               "{'role': ..., 'content': ...}.")
        for m in msgs:
            role, content = (m.get("role"), m.get("content")) if isinstance(m, dict) else (None,
                                                                                        None)
            if role not in ROLES or not isinstance(content, str):
                raise SFTDataError(f"{at}each message needs a 'role' among {', '.join(ROLES)} "
                                   f"and a string 'content'; got {m!r}.")
        if not any(m["role"] == "assistant" for m in msgs):
            raise SFTDataError(f"{at}the chat has no 'assistant' message: nothing to learn.")
        check_template(template)
        try:
            return ChatFormat(hf=hf, template=template, end=end).pieces(msgs)
        except ChatError as e:
            raise SFTDataError(f"{at}{e}") from None
    prompt, response = record.get("prompt"), record.get("response")
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise SFTDataError(f"{at}a record needs string 'prompt' and 'response' fields, or "
                           f"'messages'; got keys {sorted(record)}.")
    return [(format_prompt(template, prompt), False), (response + end, True)]


def read_jsonl(path: str) -> list[dict]:
    if not os.path.isfile(path):
        raise SFTDataError(f"{path!r} is not a file: give a JSONL file with one "
                           "{'prompt': ..., 'response': ...} (or {'messages': [...]}) per line.")
    records = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                raise SFTDataError(f"{path}:{n}: not JSON ({e.msg}).") from None
            if not isinstance(rec, dict):
                raise SFTDataError(f"{path}:{n}: each line must be a JSON object.")
            records.append(rec)
    if not records:
        raise SFTDataError(f"{path} has no records.")
    return records


@dataclasses.dataclass
class Example:
    tokens: np.ndarray  # (n,) int32: the whole rendered example
    loss: np.ndarray    # (n,) bool: True where the token is part of a response (learned)


def encode(tokenizer, parts: list[tuple[str, bool]], max_len: int) -> Example | None:
    """Tokens and response mask of one example, at most `max_len` tokens: a longer prompt loses
    its beginning (the question and the 'Answer:' cue are at its end); an example whose
    responses alone do not fit is dropped (None)."""
    toks = [np.asarray(tokenizer.encode(t), np.int32) for t, _ in parts]
    flags = [np.full(len(t), r, bool) for t, (_, r) in zip(toks, parts)]
    tokens, loss = np.concatenate(toks), np.concatenate(flags)
    if len(tokens) > max_len:
        first = int(np.argmax(loss))
        if len(tokens) - first > max_len:
            return None
        tokens, loss = tokens[-max_len:], loss[-max_len:]
    if not loss[1:].any():
        return None
    return Example(tokens, loss)


def rows(examples: list[Example], length: int) -> dict[str, np.ndarray]:
    """One example per row, padded to `length` (inputs, targets, loss weights, segment ids).

    Inputs are tokens[:-1], targets tokens[1:]; a target's weight is 1 where it is a response
    token. Padding has weight 0 and segment id 0."""
    return pack([[e] for e in examples], length)


def pack(groups: list[list[Example]], length: int) -> dict[str, np.ndarray]:
    """Rows of `length` positions, row i holding the examples of groups[i] back to back, each
    with its own segment id (1, 2, ...) and positions restarting at 0."""
    n = len(groups)
    out = {"inputs": np.zeros((n, length), np.int32), "targets": np.zeros((n, length), np.int32),
           "loss_weights": np.zeros((n, length), np.float32),
           "segment_ids": np.zeros((n, length), np.int32)}
    for i, group in enumerate(groups):
        at = 0
        for s, e in enumerate(group, 1):
            k = len(e.tokens) - 1
            if at + k > length:
                raise ValueError(f"examples of {at + k} positions do not fit a row of {length}.")
            out["inputs"][i, at:at + k] = e.tokens[:-1]
            out["targets"][i, at:at + k] = e.tokens[1:]
            out["loss_weights"][i, at:at + k] = e.loss[1:]
            out["segment_ids"][i, at:at + k] = s
            at += k
    return out


def pack_groups(lengths: list[int], length: int, order: np.ndarray,
                open_rows: int = 32) -> list[list[int]]:
    """Greedy first-fit of examples (taken in `order`) into rows of `length` positions; an
    example of n tokens takes n - 1 positions. Only the last `open_rows` rows with room are
    tried, which keeps packing linear in the number of examples. Returns each row's example
    indices."""
    groups, room, candidates = [], [], []
    for i in order:
        need = int(lengths[i]) - 1
        for r in candidates:
            if room[r] >= need:
                break
        else:
            r = len(groups)
            groups.append([])
            room.append(length)
            candidates.append(r)
            if len(candidates) > open_rows:
                candidates.pop(0)
        groups[r].append(int(i))
        room[r] -= need
        if room[r] < 2:
            candidates.remove(r)
    return groups


# -- sources ---------------------------------------------------------------------------------

def load_records(data, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """(training records, validation records) of the source `data.name` names
    (lmjax/data/sources.py)."""
    return sources.load(data, "records", args=(seed,))


# The record sources (lmjax/data/sources.py).

def jsonl_records(data, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """data.train_file and data.val_file (or data.val_fraction of the training file held
    out, drawn from `seed`)."""
    train = read_jsonl(data.train_file)
    if data.val_file:
        return train, read_jsonl(data.val_file)
    order = np.random.default_rng(seed).permutation(len(train))
    n_val = max(1, int(len(train) * data.val_fraction))
    return [train[i] for i in order[n_val:]], [train[i] for i in order[:n_val]]


def check_jsonl(data) -> None:
    require(bool(data.train_file), "data.name='jsonl' needs data.train_file (a JSONL file of "
            "{'prompt', 'response'} or {'messages'} records).")


def qa_shakespeare_records(data, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """The closed-book QA set (lmjax/data/qa_shakespeare.py), split by data.qa_seed."""
    from lmjax.data import qa_shakespeare  # lazy: start-up time (reads the whole corpus)

    qa = qa_shakespeare.build(seed=data.qa_seed)
    return qa["train"], qa["val"]


def tfds_records(data, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """A SQuAD-shaped TFDS set: context + question -> answer."""
    return squad_records(data.name[len("tfds:"):], data.max_examples, data.val_split)


def squad_record(ex: dict) -> dict:
    """A SQuAD example (context, question, answers) -> a prompt/response record: the context
    and question make the prompt, the first reference answer is the response, and every
    reference is kept for exact match / F1."""
    def text(x):
        return x.decode("utf-8") if isinstance(x, bytes) else str(x)

    answers = [text(a) for a in np.asarray(ex["answers"]["text"]).reshape(-1)]
    if not answers:
        raise SFTDataError("a SQuAD example without an answer (SQuAD v2's unanswerable "
                           "questions are not supported).")
    return {"prompt": f"{text(ex['context'])}\n{text(ex['question'])}",
            "response": answers[0], "answers": answers}


def squad_records(name: str, max_examples: int = 0, val_split: str = ""):
    """Training and validation records of a SQuAD-shaped TFDS dataset, through
    `tfds.data_source` (random access; no TensorFlow needed)."""
    import tensorflow_datasets as tfds  # lazy: optional extra, slow to import

    out = []
    for split in ("train", val_split or "validation"):
        try:
            source = tfds.data_source(name, split=split)
        except Exception as e:  # noqa: BLE001 - tfds raises many kinds; name the fix
            raise SFTDataError(f"data.name='tfds:{name}' could not be read ({type(e).__name__}:"
                               f" {str(e)[:200]}). It downloads on first use: check the "
                               "internet connection, or write the examples to JSONL and use "
                               "data.name='jsonl'.") from None
        n = len(source) if not max_examples else min(max_examples, len(source))
        out.append([squad_record(source[i]) for i in range(n)])
    return out[0], out[1]
