"""benchmarks/accelerator.py and what it relies on: every runtime dependency is on the
accelerator's image (benchmarks/accelerator_image.txt), carried as a wheel or imported lazily;
lmjax's bench runs on a python3 that lacks tensorflow-datasets, importlib_resources,
tensorboardX and qwix (the accelerator machine lacks them); and the driver records every stage,
failed or not, as it goes."""

import importlib.util
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Modules the accelerator lacks and lmjax imports lazily: the bench and the entry points are
# run below with them made unimportable.
BLOCKED = ("tensorflow_datasets", "importlib_resources", "tensorboardX", "qwix")

# Makes the blocked packages unimportable (as on the accelerator), then runs a module as
# `python -m` would.
BOOTSTRAP = textwrap.dedent("""
    import runpy, sys
    BLOCKED = set(sys.argv[1].split(","))

    class Unavailable:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"{name} is not installed here (blocked by the test)")
            return None

    sys.meta_path.insert(0, Unavailable())
    for name in list(sys.modules):
        if name.split(".")[0] in BLOCKED:
            del sys.modules[name]
    module = sys.argv[2]
    sys.argv = [module] + sys.argv[3:]
    runpy.run_module(module, run_name="__main__", alter_sys=True)
""")


def _project(requirement: str) -> str:
    """A requirement's project name, normalised as PEP 503 does ('Orbax_Checkpoint>=1' ->
    'orbax-checkpoint')."""
    name = re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", requirement).group(1)
    return re.sub(r"[-_.]+", "-", name).lower()


def accelerator_image() -> set[str]:
    lines = (ROOT / "benchmarks" / "accelerator_image.txt").read_text().splitlines()
    return {_project(line) for line in lines if line.split("#")[0].strip()}


def carried_wheels() -> set[str]:
    """What benchmarks/prepare_accelerator.sh carries: its REQUIRED wheels and the wheels it
    builds from sdists (`pip wheel ... NAME==VERSION`)."""
    script = (ROOT / "benchmarks" / "prepare_accelerator.sh").read_text()
    required = re.search(r"^REQUIRED=\(([^)]*)\)", script, re.M).group(1).split()
    built = re.findall(r"pip wheel .*--no-deps (\S+)", script)
    return {_project(r) for r in required + built}


def not_on_accelerator(pyproject: str) -> list[str]:
    """[project] dependencies that the accelerator neither has nor gets: not on its image, not
    carried, and not among the BLOCKED modules the bench is shown to run without."""
    import tomllib  # noqa: lazy, Python 3.11+ (the test skips on 3.10)

    dists = importlib.metadata.packages_distributions()
    lazy = {_project(d) for module in BLOCKED for d in dists.get(module, [])}
    present = accelerator_image() | carried_wheels() | lazy
    return [d for d in tomllib.loads(pyproject)["project"]["dependencies"]
            if _project(d) not in present]


def test_every_runtime_dependency_is_on_the_accelerator_or_carried():
    pytest.importorskip("tomllib")
    assert {"ml-collections", "tensorboardx"} <= carried_wheels()  # the parse finds the list
    pyproject = (ROOT / "pyproject.toml").read_text()
    missing = not_on_accelerator(pyproject)
    assert not missing, (
        f"{missing}: the accelerator's python3 lacks them. Add each to "
        "benchmarks/accelerator_image.txt if the machine has it, to the REQUIRED wheels of "
        "benchmarks/prepare_accelerator.sh, or import it lazily and add it to BLOCKED here.")
    # The check can fail: a new dependency that the machine lacks is caught here, not there.
    fake = pyproject.replace("dependencies = [", 'dependencies = [\n  "not-on-the-image>=1",', 1)
    assert not_on_accelerator(fake) == ["not-on-the-image>=1"]


def _env(tmp_path) -> dict:
    env = dict(os.environ)
    env.pop("XLA_FLAGS", None)  # conftest's 8 simulated devices: not wanted in the child
    env.update(LMJAX_CACHE=str(tmp_path / "cache"), HF_HUB_OFFLINE="1", JAX_PLATFORMS="cpu",
               PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]))
    return env


@pytest.mark.slow  # a subprocess
def test_bench_runs_without_tfds_tensorboardx_and_qwix(tmp_path):
    cmd = [sys.executable, "-c", BOOTSTRAP, ",".join(BLOCKED), "lmjax", "bench",
           "--config=configs/gpt.py", "--config.model.num_layers=1",
           "--config.model.d_model=32", "--config.model.num_heads=2",
           "--config.model.block_size=16", "--config.train.batch_size=2",
           "--config.mesh.host_cpu_devices=1", "--config.data.name=files",
           "--config.data.files=README.md", "--steps=2", "--warmup=1"]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=240)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "tokens/s" in out.stdout

    # The driver reads that table into figures.
    accel = _load_driver()
    figures = accel.parse_bench(out.stdout)
    assert figures["tokens_per_s"] > 0 and figures["compile_s"] > 0, out.stdout


@pytest.mark.parametrize("command", ["lmjax.main", "lmjax bench_generate"])
def test_entry_points_load_without_tfds_tensorboardx_and_qwix(tmp_path, command):
    # The other commands the accelerator script runs, as far as --help takes them (flag
    # parsing and the command module); the trainer imports tensorboardX only when it opens its
    # TensorBoard writer, and the accelerator carries that wheel.
    cmd = [sys.executable, "-c", BOOTSTRAP, ",".join(BLOCKED), *command.split(), "--help"]
    out = subprocess.run(cmd, cwd=ROOT, env=_env(tmp_path), capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "--config" in out.stdout + out.stderr


def _load_driver():
    spec = importlib.util.spec_from_file_location("accelerator_driver",
                                                  ROOT / "benchmarks" / "accelerator.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_driver_records_failed_timed_out_and_passing_stages(tmp_path):
    accel = _load_driver()
    results, logs = tmp_path / "results", tmp_path / "work" / "logs"
    rec = accel.Recorder(str(results), str(logs), {"mode": "test", "started": "now",
                                                   "host": "here", "python": "3",
                                                   "budget_s": 60})
    runner = accel.Runner(rec, budget_s=60, min_stage_s=1, echo=lambda *a, **k: None)
    py = sys.executable
    stages = [
        accel.Stage("broken", "exits 3", [py, "-c", "print('partial'); raise SystemExit(3)"],
                    timeout=30, parse=accel.parse_bench, required=("tokens_per_s",)),
        accel.Stage("slow", "outlives its timeout", [py, "-c", "import time; time.sleep(30)"],
                    timeout=1, parse=accel.parse_bench),
        accel.Stage("silent", "exits 0 without the figure", [py, "-c", "print('hello')"],
                    timeout=30, parse=accel.parse_bench, required=("tokens_per_s",)),
        accel.Stage("fine", "prints a bench table",
                    [py, "-c", "print('compile time  1.5 s'); print('tokens/s  12,345'); "
                               "print('MFU  41.2%')"],
                    timeout=30, parse=accel.parse_bench, required=("tokens_per_s",)),
        accel.Stage("derived", "in-process", compute=lambda r: {
            "ratio": r.fig("fine", "tokens_per_s") / 1000}, required=("ratio",)),
        accel.Stage("not-needed", "conditional", [py, "-c", "pass"],
                    when=lambda r: not r.ok("fine")),
    ]
    expected = [("broken", "failed", 3), ("slow", "timeout", None), ("silent", "failed", 0),
                ("fine", "ok", 0), ("derived", "ok", None)]
    for i, stage in enumerate(stages):
        runner.run(stage)
        # After every stage, what is on disk is complete and well-formed.
        lines = (results / "results.jsonl").read_text().splitlines()
        done = expected[:min(i + 1, len(expected))]
        assert len(lines) == len(done)
        entries = [json.loads(line) for line in lines]
        assert [(e["stage"], e["status"]) for e in entries] == [(n, s) for n, s, _ in done]
        for e in entries:
            assert {"stage", "command", "rc", "seconds", "status", "figures"} <= set(e)
        md_rows = [r for r in (results / "results.md").read_text().splitlines()
                   if r.startswith("| ") and not r.startswith("| stage") and "---" not in r]
        assert len(md_rows) == len(done)
        with tarfile.open(results / "logs.tar.gz") as tar:
            names = tar.getnames()
        assert sum(n.endswith(".log") for n in names) == min(i + 1, 4)

    entries = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    by = {e["stage"]: e for e in entries}
    assert by["broken"]["rc"] == 3 and by["broken"]["figures"] == {}
    assert by["slow"]["seconds"] < 20
    assert "no tokens_per_s" in by["silent"]["note"]
    assert by["fine"]["figures"] == {"compile_s": 1.5, "tokens_per_s": 12345.0, "mfu_pct": 41.2}
    assert by["derived"]["figures"] == {"ratio": 12.345}
    md = (results / "results.md").read_text()
    assert "| fine | ok | 0 |" in md and "tokens_per_s=12,345" in md

    # Out of budget: later stages are recorded as skipped, not run.
    runner.deadline = 0
    runner.run(accel.Stage("late", "no time left", [py, "-c", "pass"]))
    last = json.loads((results / "results.jsonl").read_text().splitlines()[-1])
    assert (last["stage"], last["status"]) == ("late", "skipped")


# What `lmjax bench_generate --bound --hf_compare` and `benchmarks/rollout_speed.py --step`
# print (abridged from real runs), for the decoder-family stages' parsers.
GENERATE_OUT = """\
Model: 2-layer d=1024 qwen3, random weights; device: cpu (cpu); prompt 32, 8 greedy new tokens
Memory read bandwidth: 20.1 GB/s (jitted sum), 11.2 GB/s (NumPy); batch 1 reads 749 MB per \
token: bound 26.9 tokens/s
lmjax  batch   1:          8 tokens/s (decode alone 13), time to first token 423.9 ms, 0.967 s \
per run (compile 8.0 s); decode at 48% of its bound
HF     batch   1:          5 tokens/s, time to first token 997.1 ms (cpu); lmjax is 1.8x; same \
greedy tokens: the first 8 of 8 in every row (HF float32, lmjax float32)
lmjax  batch   8:         13 tokens/s (decode alone 26), time to first token 2654.3 ms, 4.786 s \
per run (compile 14.8 s)
HF     batch   8:          8 tokens/s, time to first token 1692.7 ms (cpu); lmjax is 1.6x; same \
greedy tokens: the first 5 of 8 in every row (HF float32, lmjax float32)
"""
ROLLOUT_OUT = """\
model: 2 layers, d=64, vocab 1024, bfloat16, 2-layer d=64 qwen3, random weights; cpu
requests: 2 prompts x 4 samples, 32 prompt tokens, 16 new tokens each (128 tokens), temperature 1
batched (one call of 8 rows): 36.2 ms, 3,538 tokens/s
GRPO step: 59.6 ms (compile 20.4 s), 6,446 tokens/s over 8 rows x 48 positions; peak memory n/a
update (the step less the batched rollout: rewards, reference and policy log-probabilities, \
backward, optimizer): 23.4 ms, 16,417 tokens/s; rollout 61% of the step
"""


def test_the_decoder_stages_figures_are_parsed(tmp_path):
    accel = _load_driver()
    f = accel.parse_generate(GENERATE_OUT)
    assert f["bandwidth_GBps"] == 20.1 and f["MB_per_token"] == 749
    assert f["bound_tokens_per_s"] == 26.9 and f["lmjax_b1_pct_of_bound"] == 48
    assert f["lmjax_b8_decode_tokens_per_s"] == 26 and f["hf_b8_tokens_per_s"] == 8
    assert f["same_tokens_b1"] == "8/8" and f["same_tokens_b8"] == "5/8"
    assert f["lmjax_over_hf_b1"] == 1.8 and f["hf_device"] == "cpu"
    f = accel.parse_rollout(ROLLOUT_OUT)
    assert f == {"rollout_ms": 36.2, "rollout_tokens_per_s": 3538.0, "step_ms": 59.6,
                 "compile_s": 20.4, "step_tokens_per_s": 6446.0, "update_ms": 23.4,
                 "update_tokens_per_s": 16417.0, "rollout_pct_of_step": 61.0,
                 "model": "2 layers, d=64, vocab 1024, bfloat16, 2-layer d=64 qwen3, random "
                          "weights; cpu"}
    # First after env, in this order; issue 30's command in true fp32, as PyTorch's.
    names = {s.name: s for s in accel.build_stages(rehearse=False, work=str(tmp_path))}
    assert list(names)[1:5] == ["generate-qwen3-fp32", "bench-llama1b", "generate-llama1b",
                                "grpo-qwen3"]
    assert "--config.model.dtype=float32" in names["generate-qwen3-fp32"].cmd
    assert names["generate-qwen3-fp32"].env == {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}


def test_loss_comparison_of_two_training_runs():
    accel = _load_driver()
    fp32 = [{"step": s, "split": "train", "loss": loss} for s, loss in ((10, 4.0), (20, 3.0))]
    bf16 = [{"step": s, "split": "train", "loss": loss} for s, loss in ((10, 4.04), (20, 3.0))]
    bf16.append({"step": 20, "split": "val", "loss": 3.1})
    f = accel.compare_losses(fp32, bf16)
    assert f["steps_compared"] == 2 and f["worst_step"] == 10
    assert f["max_rel_diff_pct"] == pytest.approx(1.0) and f["within_2pct"]


def test_driver_cut_off_by_sigterm_records_the_stage_it_was_running(tmp_path):
    # The device tool ends a call that outlives its limit: what finished, and the stage cut off,
    # must already be on disk.
    script = textwrap.dedent(f"""
        import signal, sys
        sys.path.insert(0, {str(ROOT / "benchmarks")!r})
        import accelerator as a
        rec = a.Recorder(sys.argv[1], sys.argv[2], {{"mode": "test", "started": "now",
                         "host": "here", "python": "3", "budget_s": 60}})
        runner = a.Runner(rec, budget_s=60, min_stage_s=1)
        signal.signal(signal.SIGTERM, runner.interrupted)
        runner.run(a.Stage("quick", "", [sys.executable, "-c", "print('tokens/s  5')"],
                           parse=a.parse_bench))
        runner.run(a.Stage("long", "", [sys.executable, "-c",
                                        "print('started', flush=True); import time; "
                                        "time.sleep(60)"], timeout=60))
    """)
    results = tmp_path / "results"
    proc = subprocess.Popen([sys.executable, "-c", script, str(results), str(tmp_path / "logs")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        logs = list((tmp_path / "logs").glob("*-long.log"))
        if logs and "started" in logs[0].read_text():
            break
        time.sleep(0.1)
    proc.terminate()
    out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 128 + 15, out
    entries = [json.loads(line) for line in (results / "results.jsonl").read_text().splitlines()]
    assert [(e["stage"], e["status"]) for e in entries] == [("quick", "ok"), ("long", "timeout")]
    assert "Interrupted by signal 15" in (results / "results.md").read_text()
    with tarfile.open(results / "logs.tar.gz") as tar:
        assert any(n.endswith("-long.log") for n in tar.getnames())
