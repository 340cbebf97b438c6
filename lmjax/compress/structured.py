"""Structured pruning: whole convolution channels and dense units removed by L1 norm (Li et al.,
2017, "Pruning filters for efficient ConvNets"), exported as a physically smaller run.

Masks alone give no speed-up under dense XLA; here each convolution keeps its output channels
with the largest kernel L1 norms (its batch norm and the next layer's input rows follow), each
hidden dense layer of the CNN head or the MLP its units with the largest incoming L1 norms. The
classifier's outputs are never removed. The result is a run directory with the narrower model
config and the sliced weights: `lmjax evaluate` and `lmjax compress_report` load it
like any run, and training it with `--config.init_from=<it>` (same narrower widths) fine-tunes
it.
"""

from __future__ import annotations

import copy
import dataclasses
import os

import jax
import numpy as np

from lmjax import rundir
from lmjax.checkpoint import Checkpointer
from lmjax.parallel import mesh as meshlib
from lmjax.train.restore import ONE_DEVICE, load_setup
from lmjax.train.setup import setup


def keep_count(width: int, fraction: float) -> int:
    return max(1, int(round(width * (1.0 - fraction))))


def l1_keep(kernel: np.ndarray, count: int) -> np.ndarray:
    """Indices (sorted) of the `count` output channels with the largest L1 norms."""
    norms = np.abs(kernel).reshape(-1, kernel.shape[-1]).sum(0)
    return np.sort(np.argsort(-norms, kind="stable")[:count])


def _layers(params, kind: str) -> list[str]:
    names = [k for k in params if k.startswith(kind + "_")]
    return sorted(names, key=lambda k: int(k.split("_")[1]))


def shrink(model: dict, params, model_state, fraction: float):
    """(model section, params, model_state) with `fraction` of every convolution's channels and
    every hidden dense layer's units removed. `model` is the run's model section (dict)."""
    name = model["name"]
    if name not in ("cnn", "mlp"):
        raise ValueError(f"structured pruning removes CNN channels and MLP units; this run's "
                         f"model is {name!r}.")
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction={fraction}: the share of channels removed, in [0, 1).")
    p = jax.tree.map(np.asarray, params)
    s = jax.tree.map(np.asarray, model_state or {})
    model = copy.deepcopy(model)
    convs, denses = _layers(p, "Conv"), _layers(p, "Dense")
    if convs and model.get("norm", "batch") == "group":
        raise ValueError("structured pruning of a group-norm CNN would change its groups; "
                         "prune a batch-norm or norm='none' CNN.")
    carry = None  # indices kept by the previous layer (its outputs = this layer's inputs)
    widths = []
    for i, conv in enumerate(convs):
        k = p[conv]["kernel"]
        if carry is not None:
            k = k[:, :, carry, :]
        keep = l1_keep(k, keep_count(k.shape[-1], fraction))
        p[conv]["kernel"] = k[..., keep]
        if "bias" in p[conv]:
            p[conv]["bias"] = p[conv]["bias"][keep]
        for col in (p, *s.values()):  # batch norm or group norm of the same index
            for norm in (f"BatchNorm_{i}", f"GroupNorm_{i}"):
                if norm in col:
                    col[norm] = {n: v[keep] for n, v in col[norm].items()}
        carry, widths = keep, widths + [len(keep)]
    hidden = []
    for j, dense in enumerate(denses):
        k = p[dense]["kernel"]
        if j == 0 and convs:  # after the feature map, flattened (H, W, C) or averaged (C)
            c = int(np.asarray(params[convs[-1]]["kernel"]).shape[-1])
            k = k.reshape(-1, c, k.shape[-1])[:, carry, :].reshape(-1, k.shape[-1])
        elif carry is not None:
            k = k[carry, :]
        if j == len(denses) - 1:  # the classifier: its outputs stay
            p[dense]["kernel"] = k
            break
        keep = l1_keep(k, keep_count(k.shape[-1], fraction))
        p[dense]["kernel"], p[dense]["bias"] = k[:, keep], p[dense]["bias"][keep]
        carry, hidden = keep, hidden + [len(keep)]
    if name == "cnn":
        per_block = model.get("convs_per_block", 1)
        model["channels"] = widths[per_block - 1::per_block]
        model["head_hidden"] = hidden
    else:
        model["hidden"] = hidden
    return model, p, s


def export(workdir: str, out: str, fraction: float, log=print) -> dict:
    """Writes the narrower run to `out` (from the run's best checkpoint where it kept one);
    returns {'params_before', 'params_after', 'model'}."""
    s, state = load_setup(workdir, best=rundir.has_best(workdir))
    assets = s.task.run_assets()
    model, params, model_state = shrink(dict(assets.model), state.params, state.model_state,
                                        fraction)
    cfg = copy.deepcopy(s.cfg)
    cfg.unlock()
    for key, value in model.items():
        if key in ("channels", "head_hidden", "hidden"):
            cfg.model[key] = tuple(value)
    cfg.init_from = ""
    new_assets = dataclasses.replace(assets, model=model, config=cfg.to_dict())
    small = setup(cfg, assets=new_assets, mesh=meshlib.make_mesh(ONE_DEVICE), log=lambda x: None)
    fresh = small.new_state()
    placed = jax.device_put((params, model_state),
                            (small.shardings.params, small.shardings.model_state))
    new_state = fresh.replace(step=state.step, params=placed[0], model_state=placed[1])
    os.makedirs(out, exist_ok=True)
    rundir.write(out, new_assets)
    with Checkpointer(rundir.checkpoint_dir(out), keep=1) as ckpt:
        ckpt.save(int(state.step), new_state, cfg.to_dict(), force=True)
        ckpt.wait()
    count = lambda tree: sum(int(np.size(x)) for x in jax.tree.leaves(tree))  # noqa: E731
    report = {"params_before": count(state.params), "params_after": count(params),
              "model": model}
    log(f"Removed {fraction:.0%} of the channels/units of {workdir}: {report['params_before']:,} "
        f"-> {report['params_after']:,} parameters; widths {model.get('channels', '')} "
        f"{model.get('head_hidden', model.get('hidden'))}. Written to {out}")
    return report
