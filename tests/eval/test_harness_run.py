"""lm-eval against a trained lmjax run, end to end (slow): harness tasks during training, the
`lmjax harness` command, rolling log-likelihoods against the run's own validation loss, and
the contract with lm-eval itself: `lm_eval run --model local-completions` (both task kinds)
and `local-chat-completions` against the real server, compared request by request with
lmjax's in-process scores and `lmjax generate`'s greedy answers."""

import ast
import glob
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest

from lmjax.data import shakespeare
from lmjax.infer.load import load
from lmjax.models.generator import Generator
from lmjax.serve.app import create_app
from lmjax.serve.local import serve_in_thread
from lmjax.train.loop import train_and_evaluate

pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow  # a training run, subprocesses and a server

BLOCK = 128
BODY = 8 * BLOCK  # the held-out text: eight full windows


@pytest.fixture(scope="module")
def run(tmp_path_factory, load_config, data_cache, task_dir):
    """A tiny character GPT trained 200 steps on a play (enough to write words), its
    validation file held out whole, with the harness tasks every 100 steps: (workdir,
    summary, held-out text)."""
    d = tmp_path_factory.mktemp("harness_run")
    text = shakespeare.works()["romeo_and_juliet"]
    (d / "a_train.txt").write_text(text[:120_000])
    held_out = text[130_000:130_000 + BODY]
    # After a separator, as every document but the first is in a prepared split.
    (d / "b_val.txt").write_text("\n" + held_out)
    cfg = load_config("tiny+eval")
    cfg.data.update(name="files", files=f"{d}/a_train.txt,{d}/b_val.txt", val_fraction=0.5,
                    cache_dir=data_cache)
    cfg.model.block_size = BLOCK
    cfg.train.update(num_steps=200, eval_every=100, log_every=50, final_eval_examples=0)
    cfg.optim.learning_rate = 1e-2
    cfg.sample.num_samples = 0
    cfg.mesh.data = 1
    cfg.log.tensorboard = False
    cfg.eval.update(harness_tasks="lmjax_mc,lmjax_gen", harness_include_path=task_dir,
                    harness_batch_size=8, harness_every=100)
    workdir = str(d / "run")
    summary = train_and_evaluate(cfg, workdir)
    return workdir, summary, held_out


def _lm(workdir):
    from lmjax.eval.harness_lm import LmjaxLM

    loaded = load(workdir)
    return LmjaxLM(loaded.model, loaded.params, loaded.tokenizer, batch_size=8)


def _request(kind, *args):
    from lm_eval.api.instance import Instance

    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


def test_training_runs_the_harness_tasks_and_logs_them(run):
    workdir, summary, _ = run
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        rows = [json.loads(line) for line in f]
    harness = {r["step"]: r for r in rows if r["split"] == "harness"}
    assert sorted(harness) == [100, 200]
    assert {"lmjax_mc/acc", "lmjax_gen/exact_match"} <= set(harness[200])
    assert summary["harness_lmjax_mc/acc"] == harness[200]["lmjax_mc/acc"]


def test_the_command_scores_the_run_as_training_did(run, task_dir, run_module, tmp_path):
    workdir, summary, _ = run
    out = tmp_path / "results.json"
    r = run_module("lmjax", "harness", f"--workdir={workdir}", "--tasks=lmjax_mc,lmjax_gen",
                   f"--include_path={task_dir}", "--batch_size=8", f"--output={out}",
                   "--log_samples")
    assert r.returncode == 0, r.stderr[-3000:]
    scores = json.loads([line for line in r.stdout.splitlines() if line.startswith("{")][-1])
    assert scores["lmjax_mc/acc"] == summary["harness_lmjax_mc/acc"]
    assert scores["lmjax_gen/exact_match"] == summary["harness_lmjax_gen/exact_match"]
    assert "lmjax_mc" in json.loads(out.read_text())["samples"]
    bad = run_module("lmjax", "harness", f"--workdir={workdir}", "--tasks=nope_task",
                     f"--include_path={task_dir}")
    assert bad.returncode == 2 and "lmjax: error: unknown lm-eval task(s) nope_task" in bad.stderr


def test_rolling_loglikelihood_of_held_out_text_is_the_runs_validation_loss(run):
    workdir, summary, held_out = run
    lm = _lm(workdir)
    (total,) = lm.loglikelihood_rolling([_request("loglikelihood_rolling", held_out)])
    assert -total / BODY == pytest.approx(summary["val_loss"], abs=1e-4)


def _lm_eval_served(workdir: str, model: str, model_args: str, args: list[str],
                    out: str) -> dict:
    """`lm_eval run --model <model>` offline against the run served on localhost
    (`model_args` after the base URL); its samples per task."""
    loaded = load(workdir)
    app = create_app(Generator(loaded.model, loaded.params, loaded.tokenizer), model_name="run",
                     max_slots=4)
    env = dict(os.environ, HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu")
    with serve_in_thread(app) as base:
        r = subprocess.run([sys.executable, "-m", "lm_eval", "run", "--model", model,
                            "--model_args", f"base_url={base}{model_args}", *args,
                            "--output_path", out, "--log_samples"],
                           capture_output=True, text=True, timeout=900, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-4000:]
    samples = {}
    for path in glob.glob(f"{out}/**/samples_*.jsonl", recursive=True):
        task = re.match(r"samples_(.+)_\d{4}-", os.path.basename(path)).group(1)
        with open(path) as f:
            samples[task] = sorted((json.loads(line) for line in f), key=lambda s: s["doc_id"])
    return samples


def _arguments(sample: dict) -> list[tuple]:
    """A logged sample's requests: lm-eval writes them as {gen_args_i: {arg_j: ...}}."""
    return [tuple(arg.values()) for arg in sample["arguments"].values()]


def _generate(run_module, workdir, prompts, *flags) -> list[str]:
    """`lmjax generate`'s greedy answers to `prompts`, read from its output."""
    r = run_module("lmjax", "generate", f"--workdir={workdir}", "--temperature=0",
                   "--max_new_tokens=12", "--stop=\n\n", *flags,
                   *[f"--prompt={p}" for p in prompts])
    assert r.returncode == 0, r.stderr[-3000:]
    headers = re.findall(r"^--- \d+: (.*) \(seed .* ---\n", r.stdout, flags=re.M)
    blocks = re.split(r"^--- \d+: .* ---\n", r.stdout, flags=re.M)[1:]
    # Each printed as the prompt (after the template), the answer and a newline.
    return [block[len(ast.literal_eval(h)):-1] for h, block in zip(headers, blocks)]


def test_lm_eval_local_completions_against_the_server(run, task_dir, run_module, tmp_path):
    workdir, summary, _ = run
    samples = _lm_eval_served(
        workdir, "local-completions",
        f"/v1/completions,model=run,tokenizer_backend=remote,max_length={BLOCK}",
        ["--batch_size", "4", "--include_path", task_dir, "--tasks", "lmjax_mc,lmjax_gen"],
        str(tmp_path / "out"))
    lm = _lm(workdir)
    # Every request's log-likelihood is lmjax's own score of the same text.
    mc = samples["lmjax_mc"]
    requests = [a for s in mc for a in _arguments(s)]
    served = [float(r[0][0]) for s in mc for r in s["resps"]]
    mine = [ll for ll, _ in lm.loglikelihood([_request("loglikelihood", *a) for a in requests])]
    np.testing.assert_allclose(served, mine, atol=1e-4)
    # ... so the accuracy is what lmjax computes in process.
    assert np.mean([s["acc"] for s in mc]) == summary["harness_lmjax_mc/acc"]
    # The generated answers are `lmjax generate`'s greedy ones.
    gen = samples["lmjax_gen"]
    answers = [s["resps"][0][0] for s in gen]
    assert any(answers) and answers == _generate(run_module, workdir,
                                                 [_arguments(s)[0][0] for s in gen])


def test_lm_eval_local_chat_completions_against_the_server(run, task_dir, run_module,
                                                           tmp_path):
    workdir, _, _ = run
    samples = _lm_eval_served(
        workdir, "local-chat-completions", "/v1/chat/completions,model=run",
        ["--apply_chat_template", "--include_path", task_dir, "--tasks", "lmjax_gen"],
        str(tmp_path / "out"))
    gen = samples["lmjax_gen"]
    # The chat of one user message is the QA template around it: `generate --template=qa`.
    # (the request is the chat as JSON, logged as lm-eval's JsonChatStr: a one-item list)
    contexts = [json.loads(_arguments(s)[0][0][0])[-1]["content"] for s in gen]
    answers = [s["resps"][0][0] for s in gen]
    assert any(answers) and answers == _generate(run_module, workdir, contexts, "--template=qa")
