"""A tiny Llama (configs/llama.py:tiny with layers scanned and an untied output layer, as in
the released sizes) on every path after training, as the GPT's are tested (tests/test_sweep.py,
tests/infer, tests/serve, tests/explain, tests/test_rundir.py). `lmjax sweep` trains it; then,
moved elsewhere with its corpus deleted, the run quantizes to int8 and generates from the
export, explains its attention, and generates and serves OpenAI's completions and chats."""

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.data import corpora
from lmjax.data.chat import ChatFormat
from lmjax.infer.load import load
from lmjax.models.generator import Generator, Request

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

STEPS = 60
# Two trials: the Llama, and one whose key/value heads do not divide its 2 query heads.
SWEEP = f"""
def get_sweep():
    return dict(algorithm="grid", num_trials=0, num_steps={STEPS}, pruner="none",
                space={{"model.num_kv_heads": ("categorical", [1, 3])}},
                overrides={{"model.scan_layers": True, "model.tie_embeddings": False,
                           "train.eval_every": {STEPS}, "train.final_eval_examples": 64,
                           "checkpoint.every": {STEPS}, "sample.num_samples": 0,
                           "log.tensorboard": False}})
"""


def _refuse(*args, **kwargs):
    raise AssertionError("the corpus was read")


@pytest.fixture(scope="module")
def sweep(tmp_path_factory, run_module):
    """The sweep's directory (moved away from where it ran), its output, and its trained run.
    The corpus cache the run was prepared in is deleted, and reading a corpus in this process
    fails."""
    tmp = tmp_path_factory.mktemp("llama")
    (tmp / "sweep.py").write_text(SWEEP)
    cache = tmp / "cache"
    r = run_module("sweep", "--config=configs/llama.py:tiny", f"--sweep={tmp / 'sweep.py'}",
                   f"--workdir={tmp / 'sweep'}", f"--config.data.cache_dir={cache}",
                   "--config.mesh.host_cpu_devices=1", timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    shutil.rmtree(cache)  # every later command reads the run directory alone
    moved = Path(shutil.move(tmp / "sweep", tmp_path_factory.mktemp("elsewhere") / "sweep"))
    run = [meta.parent for meta in moved.glob("trials/*/run.json")]
    assert len(run) == 1, run  # the failed trial wrote none
    with pytest.MonkeyPatch.context() as m:
        m.setattr(corpora, "load_corpus", _refuse)
        yield SimpleNamespace(dir=moved, stdout=r.stdout, cache=cache, run=str(run[0]))


def test_a_sweep_over_the_tiny_llama_trains_it_and_records_the_familys_errors(sweep):
    optuna = pytest.importorskip("optuna")
    assert "2 of 2 trials: 1 complete, 1 failed." in sweep.stdout
    assert "ConfigError: model.num_kv_heads=3: must divide model.num_heads=2" in sweep.stdout
    best = (sweep.dir / "best_command.txt").read_text()
    assert best.startswith(f"lmjax train --config=configs/llama.py:tiny --config.train.num_steps="
                           f"{STEPS} ") and "--config.model.num_kv_heads=1 " in best
    study = optuna.load_study(study_name="sweep", storage=f"sqlite:///{sweep.dir / 'study.db'}")
    run = sweep.dir / study.best_trial.user_attrs["workdir"]  # an ordinary run of the Llama
    model = json.loads((run / "run.json").read_text())["model"]
    assert model["name"] == "llama" and model["num_kv_heads"] == 1 and model["scan_layers"]
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    final = [r["loss"] for r in records if r["split"] == "val" and r["step"] == STEPS]
    assert study.best_value == pytest.approx(final[-1])
    assert study.best_value < np.log(model["vocab_size"]) - 0.5  # trained: below a uniform guess


def test_int8_export_matches_the_float_logits_and_decodes_as_they_say(sweep, tmp_path):
    from lmjax.infer.export import quantize_run

    out = str(tmp_path / "int8")
    report = quantize_run(sweep.run, out, eval_examples=-1, log=lambda s: None)
    assert 3.5 < report["float"]["matrices"] / report["int8"]["matrices"] <= 4
    floats, exported = load(sweep.run), load(out)
    assert "int8" in exported.source
    block = exported.params["block_1"]  # the scanned layers unrolled, each with its own scales
    kernels = ([block["attn"][name]["kernel"] for name in "qkvo"]
               + [block["mlp"][name]["kernel"] for name in ("gate", "up", "down")]
               + [exported.params["lm_head"]["kernel"]])
    assert all(k.array.qvalue.dtype == jnp.int8 for k in kernels)
    prompt = floats.tokenizer.encode("ROMEO: What say you, my lord?")
    want = floats.model.apply({"params": floats.params}, prompt[None])
    got = exported.model.apply({"params": exported.params}, prompt[None])
    err = float(jnp.abs(got - want).max() / jnp.abs(want).max())
    assert 0 < err < 0.05, err  # weight-only int8: within a few percent of the logits' spread

    # Greedy decoding from the export (KV cache, qwix's int8 products) picks, at each step, the
    # argmax of the export's own logits for the whole row.
    gen = Generator(exported.model, exported.params, exported.tokenizer)
    tokens = gen.generate([Request("ROMEO:", 12)])[0].tokens
    start = len(exported.tokenizer.encode("ROMEO:"))
    row = np.concatenate([exported.tokenizer.encode("ROMEO:"), tokens])
    logits = exported.model.apply({"params": exported.params}, row[None])[0]
    assert len(tokens) == 12 and tokens == np.asarray(logits[start - 1:-1].argmax(-1)).tolist()


def test_explain_draws_the_llamas_own_attention(sweep, run_module, tmp_path):
    from lmjax.explain.attention import apply_with_attention, unscanned

    out, text = tmp_path / "explain", "ROMEO: But soft"
    r = run_module("explain", f"--workdir={sweep.run}", "--method=attention", f"--text={text}",
                   f"--out={out}")
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "attention_text.png").read_bytes()[:4] == b"\x89PNG"
    found = json.loads((out / "attention.json").read_text())["examples"][0]
    maps, roll = np.asarray(found["maps"]), np.asarray(found["rollout"])
    assert found["tokens"] == list(text) and maps.shape == (2, 2, 15, 15)  # layers, heads
    np.testing.assert_allclose(maps.sum(-1), 1.0, atol=2e-4)  # (rounded to 5 decimals)
    assert np.abs(np.triu(maps, 1)).max() == 0.0  # causal
    np.testing.assert_allclose(roll.sum(-1), 1.0, atol=2e-4)
    # They are the scanned model's layers' maps, and capturing them (the explicit softmax)
    # leaves the logits of the fused attention as they were.
    loaded = load(sweep.run)
    tokens = loaded.tokenizer.encode(text)[None]
    module, params = unscanned(loaded.model, loaded.params)
    logits, sown = apply_with_attention(module, {"params": params}, tokens)
    np.testing.assert_allclose(np.asarray(sown)[:, 0], maps, atol=1e-5)
    np.testing.assert_allclose(logits, loaded.model.apply({"params": loaded.params}, tokens),
                               atol=1e-5)
    assert not sweep.cache.exists()


@pytest.fixture(scope="module")
def generator(sweep):
    loaded = load(sweep.run)
    return Generator(loaded.model, loaded.params, loaded.tokenizer, max_batch=8)


@pytest.fixture(scope="module")
def client(sweep, generator):
    """The official `openai` client of a real server (uvicorn on 127.0.0.1) for the run."""
    openai = pytest.importorskip("openai")
    from lmjax.serve.app import create_app
    from lmjax.serve.local import serve_in_thread

    app = create_app(generator, source=sweep.run, model_name="llama", max_slots=4)
    with serve_in_thread(app) as base:
        yield openai.OpenAI(base_url=f"{base}/v1", api_key="unused", max_retries=0, timeout=60)


def test_served_completions_are_lmjax_generates_and_the_models_logprobs(
        sweep, client, generator, run_module):
    # Sampled choices with a seed: `lmjax generate`'s samples (seeds 5, 6 for each prompt).
    r = run_module("generate", f"--workdir={sweep.run}", "--prompt=KING:", "--prompt=To be",
                   "--num_samples=2", "--seed=5", "--temperature=0.9", "--max_new_tokens=12")
    assert r.returncode == 0, r.stderr[-3000:]
    served = client.completions.create(model="llama", prompt=["KING:", "To be"], max_tokens=12,
                                       n=2, temperature=0.9, seed=5)
    texts = [c.text for c in sorted(served.choices, key=lambda c: c.index)]
    assert len(set(texts)) > 1 and all(len(t) == 12 for t in texts)
    for i, (prompt, seed) in enumerate([("KING:", 5), ("KING:", 6), ("To be", 5), ("To be", 6)]):
        assert f"--- {i}: {prompt!r} (seed {seed}, 12 tokens, length) ---\n{prompt}{texts[i]}\n" \
            in r.stdout
    # Greedy with the prompt echoed and scored (what lm-eval sends): each prompt token's
    # log-probability is the model's, and each new token is the most likely one.
    prompt = "ROMEO: But soft"
    r = client.completions.create(model="llama", prompt=prompt, max_tokens=8, temperature=0,
                                  echo=True, logprobs=1)
    ids = generator.tokenizer.encode(prompt)
    logits = np.asarray(generator.model.apply({"params": generator.params}, ids[None]),
                        np.float64)[0]
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    scored = r.choices[0].logprobs
    assert r.choices[0].text.startswith(prompt) and len(scored.tokens) == len(ids) + 8
    np.testing.assert_allclose(scored.token_logprobs[1:len(ids)],
                               logp[np.arange(len(ids) - 1), ids[1:]], atol=1e-4)
    for token, logprob, top in list(zip(scored.tokens, scored.token_logprobs,
                                        scored.top_logprobs))[len(ids):]:
        assert top == {token: pytest.approx(logprob, abs=1e-5)}
    assert not sweep.cache.exists()


def test_chat_replies_continue_the_runs_chat_rendering(client, generator):
    # The run's format (lmjax's QA format: no Hugging Face template), ended at its turn end.
    fmt = ChatFormat.for_run(generator.tokenizer)
    chat = [{"role": "user", "content": "Who"}]
    text = fmt.render(chat)
    assert text == "Question: Who\nAnswer: "  # 23 tokens of the context's 32
    reply = client.chat.completions.create(model="llama", messages=chat, max_tokens=8,
                                           temperature=0).choices[0]
    alone = client.completions.create(model="llama", prompt=text, max_tokens=8, temperature=0,
                                      stop=[fmt.turn_end]).choices[0]
    assert reply.message.content == alone.text != ""
    assert reply.finish_reason == alone.finish_reason
    chunks = client.chat.completions.create(model="llama", messages=chat, max_tokens=8,
                                            temperature=0, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == alone.text
