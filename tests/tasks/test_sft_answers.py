"""SFT's end-of-training answers through the one decoder equal the answers of the cache-free
greedy loop it replaced (kept here as the reference)."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data import sft as sft_data
from lmjax.data.shakespeare import works
from lmjax.data.tokenizers import BPETokenizer
from lmjax.tasks import make_task

NAMES = ["Romeo", "Juliet", "Prospero", "Ariel", "Hamlet", "Lear", "Viola", "Puck"]


def old_greedy_answers(apply_fn, params, tokenizer, prompts: list[str], block_size: int,
                       max_new_tokens: int, stop: tuple[str, ...],
                       batch_size: int = 64) -> list[str]:
    """SFT's answers before the one decoder (lmjax/tasks/sft.py until the decoder moved to
    lmjax/models/decoding.py), kept as the reference: greedy, cache-free (every step re-runs
    the right-padded rows), each prompt cut to leave max_new_tokens of room, each answer cut at
    the first stop string or end-of-text."""
    eot = getattr(tokenizer, "eot_id", None)
    stops = tuple(stop) + ((tokenizer.decode([eot]),) if eot is not None else ())

    @jax.jit
    def next_tokens(params, buf, lengths):
        logits = apply_fn(params, buf)
        last = jnp.take_along_axis(logits, (lengths - 1)[:, None, None], axis=1)[:, 0]
        return last.argmax(-1).astype(jnp.int32)

    answers = []
    for i in range(0, len(prompts), batch_size):
        encoded = [np.asarray(tokenizer.encode(p), np.int32)[-(block_size - max_new_tokens):]
                   for p in prompts[i:i + batch_size]]
        n = len(encoded)
        buf = np.zeros((batch_size, block_size), np.int32)
        lengths = np.ones(batch_size, np.int32)
        for r, e in enumerate(encoded):
            buf[r, :len(e)], lengths[r] = e, len(e)
        new = [[] for _ in range(n)]
        done = np.zeros(n, bool)
        for _ in range(max_new_tokens):
            nxt = np.asarray(next_tokens(params, buf, lengths))
            for r in np.flatnonzero(~done):
                new[r].append(int(nxt[r]))
                buf[r, lengths[r]] = nxt[r]
                lengths[r] += 1
                text = tokenizer.decode(new[r])
                done[r] = any(s and s in text for s in stops) or lengths[r] >= block_size
            if done.all():
                break
        for r in range(n):
            text = tokenizer.decode(new[r])
            cut = min([text.find(s) for s in stops if s and s in text] + [len(text)])
            answers.append(text[:cut].strip())
    return answers


@pytest.mark.slow  # the decoder against a cache-free loop: tests/infer/test_generate.py is fast
def test_answers_equal_the_cache_free_greedy_loop(load_config, tmp_path):
    records = [{"prompt": f"Who is number {i}?" + " And then what?" * (i % 5 * 3),
                "response": NAMES[i % len(NAMES)]} for i in range(40)]
    with open(tmp_path / "qa.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    BPETokenizer.train(list(works().values())[:2], vocab_size=1000).save(str(tmp_path))
    c = load_config("tiny", "sft.py")  # context 64
    c.data.update(name="jsonl", train_file=str(tmp_path / "qa.jsonl"), val_fraction=0.5,
                  tokenizer_file=str(tmp_path / "tokenizer.json"))
    c.sft.update(max_answer_tokens=12, stop=("\n\n", "e"))  # 'e': answers end at all lengths
    c.log.tensorboard = False
    task = make_task(c, log=lambda s: None)
    params = nn.meta.unbox(task.init_variables(jax.random.PRNGKey(0))["params"])
    # Larger weights than an initialisation: greedy answers that differ from question to question.
    params = jax.tree.map(lambda x: 10 * x if x.ndim >= 2 else x, params)
    questions = [r["prompt"] for r in records[:24]]

    got = task.answer(params, questions)
    prompts = [sft_data.format_prompt(c.sft.template, q) for q in questions]
    ref = old_greedy_answers(lambda p, x: task.model.apply({"params": p}, x), params,
                             task.tokenizer, prompts, task.seq_len, c.sft.max_answer_tokens,
                             tuple(c.sft.stop))
    assert got == ref
    # The comparison means something: the answers differ, some prompts were cut to fit, and the
    # stop strings cut some answers.
    assert len(set(got)) > 5, got
    room = task.seq_len - c.sft.max_answer_tokens
    assert any(len(task.tokenizer.encode(p)) > room for p in prompts)
    uncut = old_greedy_answers(lambda p, x: task.model.apply({"params": p}, x), params,
                               task.tokenizer, prompts, task.seq_len, c.sft.max_answer_tokens, ())
    assert uncut != ref
