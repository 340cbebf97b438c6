"""task=sft: answer-only loss, init_from a language-model run, QA at the end, LoRA, generate."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.infer.load import load
from lmjax.models.gpt import GPT
from lmjax.tasks import make_task
from lmjax.tasks.base import ANSWERS
from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import load_run

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

NAMES = ["Romeo", "Juliet", "Prospero", "Ariel", "Hamlet", "Lear", "Viola", "Puck"]


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_cache):
    """A 2-step character GPT (block 64): the run SFT starts from."""
    from lmjax.config import load_config
    from pathlib import Path

    c = load_config(str(Path(__file__).resolve().parents[2] / "configs" / "gpt.py") + ":tiny")
    c.data.cache_dir = data_cache
    c.log.tensorboard = False
    c.model.block_size = 64
    c.train.update(num_steps=2, eval_every=2, final_eval_examples=8)
    c.optim.warmup_steps = 1
    c.sample.num_samples = 0
    workdir = str(tmp_path_factory.mktemp("lm"))
    train_and_evaluate(c, workdir)
    return workdir


@pytest.fixture(scope="module")
def qa_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("qa") / "qa.jsonl"
    with open(path, "w") as f:
        for i in range(48):
            f.write(json.dumps({"prompt": f"Who is number {i}?",
                                "response": NAMES[i % len(NAMES)]}) + "\n")
    return str(path)


@pytest.fixture
def sft_config(load_config, pretrained, qa_file):
    c = load_config("tiny", "sft.py")
    c.init_from = pretrained
    c.data.update(name="jsonl", train_file=qa_file, val_fraction=0.25)
    c.train.batch_size = 8  # one row per simulated device
    c.log.tensorboard = False
    return c


def _params(task, seed=0):
    return nn.meta.unbox(task.init_variables(jax.random.PRNGKey(seed))["params"])


def test_prompt_tokens_get_no_gradient(sft_config):
    task = make_task(sft_config, log=lambda s: None)
    params = _params(task)
    batch = {k: jnp.asarray(v) for k, v in task.train_batch(0).items()}
    prompt = (batch["loss_weights"] == 0) & (batch["segment_ids"] > 0)
    assert prompt.any() and (batch["loss_weights"] > 0).any()
    other = dict(batch, targets=jnp.where(prompt, (batch["targets"] + 1) % 7, batch["targets"]))
    fn = jax.jit(jax.value_and_grad(lambda p, b: task.loss(p, {}, b, jax.random.PRNGKey(0))[0]))
    (loss, grads), (loss2, grads2) = fn(params, batch), fn(params, other)
    assert float(loss) == float(loss2)
    jax.tree.map(np.testing.assert_array_equal, grads, grads2)
    # Whole-sequence loss (the comparison baseline) does learn the prompt: the test can fail.
    sft_config.sft.response_only = False
    full = make_task(sft_config, log=lambda s: None)
    fn = jax.jit(lambda p, b: full.loss(p, {}, b, jax.random.PRNGKey(0))[0])
    assert float(fn(params, batch)) != float(fn(params, other))


def test_response_mask_covers_exactly_the_answers(sft_config):
    task = make_task(sft_config, log=lambda s: None)
    rows = task.data["rows"]
    tok = task.tokenizer
    answers = tok.decode(rows["targets"][rows["loss_weights"] > 0])
    for name in NAMES:
        assert name + "\n\n" in answers
    assert "Question" not in answers and "number" not in answers
    sft_config.sft.packing = False  # padded: one example a row, as long as the longest
    padded = make_task(sft_config, log=lambda s: None)
    longest = max(len(e.tokens) for e in padded.data["train"]) - 1
    assert padded.data["rows"]["inputs"].shape == (len(padded.data["train"]), longest)
    assert padded.tokens_per_example == longest


def test_lora_sft_run_from_a_pretrained_lm_reports_qa_and_generates(
        sft_config, pretrained, qa_file, tmp_path, run_module, capsys):
    """One short run covers init_from, LoRA (only the adapters change), the QA report at the
    end, and answering through lmjax generate with the run's template."""
    sft_config.lora.update(rank=2, targets="qkv,out,fc")  # qkv: GPT's fused projection
    task = make_task(sft_config, log=lambda s: None)
    _, _, pre = load_run(pretrained, None)
    mine = _params(task, 3)
    loaded = task.load_pretrained(mine, pre.params)
    is_adapter = lambda p: str(p[-1].key).endswith(("_lora_a", "_lora_b"))  # noqa: E731
    base = {jax.tree_util.keystr(p): v for p, v in
            jax.tree_util.tree_flatten_with_path(pre.params)[0]}
    for p, v in jax.tree_util.tree_flatten_with_path(loaded)[0]:
        if not is_adapter(p):  # every pretrained weight is taken exactly
            np.testing.assert_array_equal(np.asarray(v), np.asarray(base[jax.tree_util.keystr(p)]))

    workdir = str(tmp_path / "sft")
    summary = train_and_evaluate(sft_config, workdir)
    assert np.isfinite(summary["val_perplexity"]) and summary["val_perplexity"] > 1
    assert "QA on 4 validation questions" in capsys.readouterr().out
    with open(f"{workdir}/metrics.jsonl") as f:  # EM and F1 as scalars, not only printed
        final = [r for r in map(json.loads, f) if r["split"] == "final"]
    assert len(final) == 1 and final[0]["qa_questions"] == 4
    assert 0 <= final[0]["qa_exact_match"] <= final[0]["qa_f1"] <= 100
    assert summary["qa_f1"] == final[0]["qa_f1"]
    run = json.load(open(f"{workdir}/run.json"))
    assert run["task"] == "sft" and run["config"]["sft"]["stop"] == ["\n\n"]

    _, _, post = load_run(workdir, None)
    flat = jax.tree_util.tree_flatten_with_path(post.params)[0]
    assert any(np.abs(np.asarray(v)).max() > 0 for p, v in flat
               if str(p[-1].key).endswith("_lora_b"))  # adapters trained (they start at zero)
    for p, v in flat:
        if not is_adapter(p):  # the base stayed frozen
            np.testing.assert_array_equal(np.asarray(v), np.asarray(base[jax.tree_util.keystr(p)]))

    # Loading for inference folds the adapters in: a plain GPT with the adapted model's logits.
    served = load(workdir, needs=(ANSWERS,))
    assert served.model == task.plain_model(post.params)[0]  # the plain GPT, no qwix wrapping
    assert type(served.model) is GPT
    assert not any(is_adapter(p) for p, _ in jax.tree_util.tree_flatten_with_path(
        served.params)[0])
    tokens = np.random.default_rng(0).integers(0, task.model_config.vocab_size, (2, 16))
    np.testing.assert_allclose(served.model.apply({"params": served.params}, tokens),
                               served.task.model.apply({"params": post.params}, tokens),
                               rtol=1e-4, atol=1e-4)

    r = run_module("generate", f"--workdir={workdir}", "--prompt=Who is number 3?",
                   "--max_new_tokens=4", "--temperature=0")
    assert r.returncode == 0, r.stderr
    assert "Question: Who is number 3?\nAnswer: " in r.stdout

    # --questions answers a file greedily; --pairs_out turns its mistakes into DPO pairs.
    pairs_file = tmp_path / "pairs" / "train.jsonl"
    r = run_module("generate", f"--workdir={workdir}", f"--questions={qa_file}",
                   "--max_new_tokens=4", f"--pairs_out={pairs_file}", "--show=48")
    assert r.returncode == 0, r.stderr
    shown = [line for line in r.stdout.splitlines() if line.startswith("'Who is number")]
    assert len(shown) == 48
    scores = json.loads(r.stdout.splitlines()[-1])
    pairs = [json.loads(line) for line in open(pairs_file)]
    assert len(pairs) == round(48 * (1 - scores["exact_match"] / 100))
    questions = {f"Who is number {i}?": NAMES[i % len(NAMES)] for i in range(48)}
    for p in pairs:  # the reference is chosen, the model's own (wrong) answer rejected
        assert p["chosen"] == p["answers"][0] == questions[p["prompt"]]
        assert p["rejected"].strip().lower() != p["chosen"].lower()
        assert f"{p['prompt']!r} -> {p['rejected']!r}" in r.stdout
