"""The generation benchmark (lmjax/serve/benchmark.py, the library of `lmjax
bench_generate`): a random-weight model from a config (a GPT or a decoder family), timings
through the Generator's own prefill and decode, and transformers' generate on the same weights
and prompts giving the same greedy tokens."""

import jax
import numpy as np
import pytest

from lmjax.models.generator import Generator, Request
from lmjax.models.gpt import GPTConfig
from lmjax.serve.benchmark import model_from_config, time_generation

pytestmark = pytest.mark.slow  # servers, subprocesses or trainings: the full suite

VOCAB, PROMPT, NEW = 64, 8, 16  # prompt + new tokens fit the tiny preset's context of 32


@pytest.fixture(scope="module")
def generator(load_config):
    cfg = load_config("tiny")  # 2 layers, 2 heads, d_model 32, context 32
    cfg.model.vocab_size = VOCAB
    model, params, tokenizer, source = model_from_config(cfg)
    assert isinstance(model.cfg, GPTConfig)
    assert model.cfg.vocab_size == VOCAB and model.cfg.num_layers == 2
    assert model.cfg.d_model == 32 and model.cfg.block_size == 32
    assert params["wte"]["embedding"].shape == (VOCAB, 32)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    assert source == "2-layer d=32 GPT, random weights"
    return Generator(model, params, tokenizer, max_batch=2, stop_at_eot=False)


@pytest.mark.parametrize("batch", [1, 2])
def test_time_generation_reports_positive_rates(generator, batch):
    r = time_generation(generator, batch, PROMPT, NEW, repeats=2)
    assert set(r) == {"batch", "ttft_s", "total_s", "compile_s", "tokens_per_s",
                      "decode_tokens_per_s", "tokens"}
    assert r["tokens"].shape == (batch, NEW)
    assert r["batch"] == batch
    assert 0 < r["ttft_s"] <= r["total_s"] and r["compile_s"] > 0
    assert r["tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
    assert r["tokens_per_s"] == pytest.approx(batch * NEW / r["total_s"])
    # The programs it timed produce exactly NEW tokens per row (same shapes: no recompile).
    out = generator.generate([Request("", max_new_tokens=NEW,
                                      prompt_ids=tuple(range(1, PROMPT + 1)))] * batch)
    assert [len(c.tokens) for c in out] == [NEW] * batch
    assert all(c.finish_reason == "length" for c in out)
    assert all(0 <= t < VOCAB for c in out for t in c.tokens)


@pytest.mark.parametrize("args", [
    ["--config=configs/gpt.py:tiny", "--workdir=runs/does-not-matter"],  # both
    [],                                                                  # neither
], ids=["both", "neither"])
def test_the_command_takes_exactly_one_of_config_and_workdir(args, run_module):
    r = run_module("bench_generate", *args)
    assert r.returncode == 2, r.stderr
    errors = [line for line in r.stderr.splitlines() if line.startswith("lmjax:")]
    assert errors == ["lmjax: error: give exactly one of --workdir (a trained run) and "
                      "--config (random weights)."], r.stderr
    assert "Traceback" not in r.stderr and r.stdout == ""


def test_the_mixed_server_workload_spans_the_issues_ranges():
    from lmjax.serve.benchmark import _workload

    work = _workload(2000, True, 64, 512)
    prompts, new = np.array([p for p, _ in work]), np.array([n for _, n in work])
    assert prompts.min() == 16 and prompts.max() == 256
    assert new.min() == 8 and new.max() == 256 and (prompts + new <= 512).all()
    assert _workload(3, False, 64, 512) == [(8, 64)] * 3
    small = _workload(200, True, 64, 128)  # a short context: cut to fit
    assert all(p <= 64 and p + n <= 128 for p, n in small)


def test_bytes_per_token_counts_every_weight_and_the_whole_cache(generator):
    from lmjax.serve.benchmark import bytes_per_token

    cfg, params = generator.model.cfg, generator.params
    weights = 4 * sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))  # float32
    # Keys and values: layers x slots x d_model each, float32.
    assert bytes_per_token(params, cfg, 24) == weights + 2 * 2 * 24 * 32 * 4


def test_read_bandwidth_is_a_plausible_rate():
    from lmjax.serve.benchmark import read_bandwidth

    bw = read_bandwidth(gib=1 / 16, repeats=2)
    assert bw["bytes_per_s"] == max(bw["xla_bytes_per_s"], bw["numpy_bytes_per_s"])
    assert 1e8 < bw["bytes_per_s"] < 1e13  # between 0.1 GB/s and 10 TB/s


def test_the_command_times_int8_beside_float_against_the_bound(run_module):
    r = run_module("bench_generate", "--config=configs/gpt.py:tiny", "--batch_sizes=1",
                   "--prompt_len=8", "--new_tokens=8", "--repeats=1", "--bound",
                   "--bound_gib=0.05", "--int8")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert any(line.startswith("Memory read bandwidth:") and "tokens/s" in line
               for line in lines), r.stdout
    float_line = next(line for line in lines if line.startswith("lmjax  batch   1"))
    int8_line = next(line for line in lines if line.startswith("int8   batch   1"))
    assert "of its bound" in float_line and "x float" in int8_line


def test_a_decoder_family_against_transformers_on_the_same_weights(load_config):
    # Qwen 3's block, untied, 2 key/value heads for 4 queries: the same greedy tokens from
    # lmjax's decoder and from Qwen3ForCausalLM's generate (what --hf_compare times).
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    from lmjax.models.decoder import DecoderConfig
    from lmjax.serve.benchmark import bytes_per_token, hf_model, same_prefix, time_hf

    cfg = load_config("tiny", "llama.py")  # 2 layers, d=32, context 32
    cfg.model.update(name="qwen3", num_heads=4, num_kv_heads=2, tie_embeddings=False,
                     vocab_size=VOCAB)
    model, params, tokenizer, source = model_from_config(cfg)
    assert isinstance(model.cfg, DecoderConfig) and model.cfg.qk_norm  # the family's features
    assert source == "2-layer d=32 qwen3, random weights"
    gen = Generator(model, params, tokenizer, max_batch=2, stop_at_eot=False)
    ours = time_generation(gen, 2, PROMPT, NEW, repeats=1)
    theirs = time_hf(hf_model(model.cfg, params), VOCAB, 2, PROMPT, NEW, repeats=1)
    assert theirs["tokens"].shape == (2, NEW) and theirs["dtype"] == "float32"
    assert same_prefix(ours["tokens"], theirs["tokens"]) == NEW
    # Batch 1 reads every weight but the untied input table, and 2 key/value heads of 8.
    weights = 4 * sum(int(np.prod(x.shape)) for x in jax.tree.leaves(params))
    assert bytes_per_token(params, model.cfg, 24) == (weights - 4 * VOCAB * 32
                                                      + 2 * 2 * 24 * (2 * 8) * 4)
