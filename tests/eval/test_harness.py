"""lmjax as an lm-eval model in process (lmjax/eval/harness_lm.py) on tiny shapes: each
request's log-likelihood equals the model applied to that row alone, rolling windows cover a
text token by token, generations are the Generator's greedy ones, and local YAML tasks run
through lm-eval's own evaluator with the accuracy those numbers give."""

import os

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from lmjax.eval import harness
from lmjax.models.generator import Generator, Request

pytest.importorskip("lm_eval")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

from lm_eval.api.instance import Instance  # noqa: E402


def _logp(model, params, ids):
    """log-softmax of the model applied to one row alone: entry i is token i + 1's."""
    logits = np.asarray(model.apply({"params": params}, jnp.asarray([ids])), np.float64)[0]
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def _request(kind, *args):
    return Instance(request_type=kind, doc={}, arguments=args, idx=0)


@pytest.fixture(scope="module")
def lm(tiny_lm):
    from lmjax.eval.harness_lm import LmjaxLM

    return LmjaxLM(*tiny_lm, batch_size=4)


def test_each_loglikelihood_is_its_row_scored_alone(lm, tiny_lm):
    model, params, tok = tiny_lm
    pairs = [("Question: Who loves Juliet?\nAnswer:", " Romeo"), ("ab", "c"),
             ("To be or not to be", " that is the question"), ("", "Hello there"),
             ("x" * 60, " and more than the context holds")]
    got = lm.loglikelihood([_request("loglikelihood", c, t) for c, t in pairs])
    for (context, continuation), (ll, greedy) in zip(pairs, got):
        ctx = tok.encode(context).tolist() or [lm.prefix_token_id]  # empty: the separator
        row = (ctx + tok.encode(continuation).tolist())[-65:]
        n = len(continuation)
        logp = _logp(model, params, row[:-1])
        assert ll == pytest.approx(sum(logp[i - 1, row[i]] for i in range(len(row) - n,
                                                                          len(row))), abs=1e-4)
        assert greedy == all(np.argmax(logp[i - 1]) == row[i]
                             for i in range(len(row) - n, len(row)))
    assert lm.prefix_token_id == tok.encode("\n")[0]  # characters: documents end in newlines


def test_rolling_windows_score_every_token_once_with_a_full_context(lm, tiny_lm):
    model, params, tok = tiny_lm
    text = "".join("The quick brown fox jumps over the lazy dog. "[i % 45] for i in range(192))
    (total,) = lm.loglikelihood_rolling([_request("loglikelihood_rolling", text)])
    # Independently: the separator, then the text, cut into rows of 65 that overlap by one.
    ids = tok.encode("\n" + text).tolist()
    rows = [ids[i:i + 65] for i in range(0, len(ids) - 1, 64)]
    expected = sum(_logp(model, params, r[:-1])[np.arange(len(r) - 1), r[1:]].sum()
                   for r in rows)
    assert total == pytest.approx(expected, abs=1e-3)


@pytest.mark.slow  # the full suite; test_harness_run.py also checks it end to end
def test_generate_until_is_greedy_generation_with_the_stops(lm, tiny_lm):
    model, params, tok = tiny_lm
    prompts = ["Question: Who loves Juliet?\nAnswer:", "a", "The Moor of Venice is"]
    kwargs = {"until": ["\n", "."], "max_gen_toks": 10, "do_sample": False}
    got = lm.generate_until([_request("generate_until", p, kwargs) for p in prompts])
    gen = Generator(model, params, tok)
    assert got == [gen.generate([Request(p, 10, stop=("\n", "."))])[0].text for p in prompts]


@pytest.mark.slow
def test_local_tasks_run_through_lm_evals_evaluator(lm, tiny_lm, task_dir):
    model, params, tok = tiny_lm
    results = harness.run(model, params, tok, ["lmjax_mc", "lmjax_gen"],
                          include_path=task_dir, log_samples=True, batch_size=4)
    s = harness.scalars(results)
    # The accuracy from this model's own scores of each choice.
    correct = []
    for sample in results["samples"]["lmjax_mc"]:
        lls = lm.loglikelihood([_request("loglikelihood", *a) for a in sample["arguments"]])
        correct.append(int(np.argmax([ll for ll, _ in lls]) == sample["target"]))
    assert s["lmjax_mc/acc"] == pytest.approx(np.mean(correct))
    assert len(correct) == 5 and "lmjax_gen/exact_match" in s
    answers = [x["resps"][0][0] for x in results["samples"]["lmjax_gen"]]
    gen = Generator(model, params, tok)
    assert answers == [gen.generate([Request(x["arguments"][0][0], 12, stop=("\n\n",))])[0].text
                       for x in results["samples"]["lmjax_gen"]]
    with pytest.raises(ValueError, match="unknown lm-eval task.*lmjax_nope"):
        harness.run(model, params, tok, ["lmjax_nope"], include_path=task_dir)


def test_the_eval_section_checks_its_fields():
    plain = ml_collections.ConfigDict({"train": {"eval_every": 10}})  # no section: off
    assert harness.tasks(plain) == [] and not harness.due(plain, 10)
    cfg = ml_collections.ConfigDict({"eval": harness.section(), "train": {"eval_every": 10}})
    harness.check(cfg)
    assert harness.tasks(cfg) == [] and not harness.due(cfg, 10)
    cfg.eval.harness_tasks = "a, b,"
    assert harness.tasks(cfg) == ["a", "b"] and harness.due(cfg, 20) and not harness.due(cfg, 5)
    cfg.eval.harness_every = 5
    assert harness.due(cfg, 5)
    cfg.eval.harness_batch_size = 0
    with pytest.raises(ValueError, match="eval.harness_batch_size=0"):
        harness.check(cfg)


def test_scalars_name_each_tasks_metrics():
    results = {"results": {"t": {"alias": "t", "acc,none": 0.5, "acc_stderr,none": "N/A",
                                 "exact_match,strict-match": 1.0, "flag,none": True}}}
    assert harness.scalars(results) == {"t/acc": 0.5, "t/exact_match_strict-match": 1.0}
