"""Conversions between an lmjax run and Hugging Face (the library behind
`python -m lmjax.convert`): export a run, import GPT-2 weights as a run ready to fine-tune."""

from __future__ import annotations

import os
import pprint
import shutil

import jax

from lmjax import rundir
from lmjax.checkpoint import Checkpointer
from lmjax.convert import bert, gpt2
from lmjax.data.tokenizers import load_tokenizer_file
from lmjax.models import lora
from lmjax.models.gpt import stack_layers, unstack_layers
from lmjax.train.restore import load_setup
from lmjax.train.setup import setup


def to_hf(workdir: str, out: str, best: bool = False) -> str:
    """Writes a Hugging Face directory for the run in `workdir`: a GPT as GPT2LMHeadModel, a
    BERT masked LM as BertForMaskedLM, a BERT text classifier (LoRA merged) as
    BertForSequenceClassification. Reads the run directory only. Returns what was converted."""
    if not os.path.isdir(rundir.checkpoint_dir(workdir)):
        raise gpt2.ConversionError(f"{workdir} has no checkpoints/: give a training run's "
                                   "workdir (not a quantized export).")
    s, state = load_setup(workdir, best=best)
    cfg, task = s.cfg, s.task
    params = jax.device_get(state.params)
    if cfg.task == "lm":
        model = task.model.cfg
        if model.__class__.__name__ != "GPTConfig":
            raise gpt2.ConversionError(f"{workdir} is a {model.name.upper()} language model: "
                                       "Hugging Face conversion covers GPT (lm).")
        gpt2.write_hf(out, unstack_layers(params, model.num_layers), model, task.tokenizer)
    elif cfg.task == "mlm":
        bert.write_hf(out, params, task.model.cfg, task.tokenizer)
    elif cfg.task == "text_classify":
        if cfg.lora.rank > 0:
            params = lora.merge(params, cfg.lora.rank, cfg.lora.alpha)
        bert.write_hf(out, params, task.base_model.cfg, task.tokenizer, task.class_names)
    else:
        raise gpt2.ConversionError(f"{workdir} is a {cfg.task!r} run: Hugging Face conversion "
                                   "covers GPT (lm), BERT masked LM (mlm) and BERT text "
                                   "classifiers (text_classify).")
    return f"{workdir} ({cfg.task}, step {int(state.step)})"


def write_run(cfg, workdir: str, params_for=None, log=print):
    """Saves step 0 of a run of `cfg` in `workdir` (its run directory: assets and checkpoint):
    freshly initialised, or with the parameters `params_for(model_cfg)` returns (per-layer
    layout). Training with `cfg` then resumes it."""
    if os.path.exists(rundir.checkpoint_dir(workdir)):
        raise FileExistsError(f"{workdir} already holds checkpoints: choose a new --workdir.")
    s = setup(cfg, log=log)
    state = s.new_state()
    if params_for is not None:
        params = params_for(s.task.model.cfg)
        if cfg.model.scan_layers:
            params = stack_layers(params, cfg.model.num_layers)
        layout = lambda tree: jax.tree.map(lambda x: x.shape, tree)  # noqa: E731
        if layout(params) != layout(state.params):
            raise gpt2.ConversionError("the converted parameters do not match the model's "
                                       "layout.")
        params = jax.tree.map(lambda x, ref: x.astype(ref.dtype), params, state.params)
        state = state.replace(params=jax.device_put(params, s.shardings.params))
    rundir.write(workdir, s.task.run_assets())
    with Checkpointer(rundir.checkpoint_dir(workdir)) as ckpt:
        ckpt.save(0, state, cfg.to_dict(), force=True)
    return s.task


def from_hf(source: str, workdir: str, cfg, tokenizer: str = "", log=print) -> str:
    """Writes an lmjax run at step 0 holding the Hugging Face GPT-2 weights, whose data are
    tokenized by GPT-2's own tokenizer; returns the path of its finetune.py."""
    if os.path.exists(rundir.checkpoint_dir(workdir)):
        raise FileExistsError(f"{workdir} already holds checkpoints: choose a new --workdir.")
    hf, tensors, tokenizer_file = gpt2.read_hf(source)
    tokenizer_file = tokenizer or tokenizer_file
    if tokenizer_file is None:
        raise gpt2.ConversionError(
            f"{source} has no tokenizer.json (the fast tokenizer file), which tokenizes the "
            "fine-tuning data: save one beside the weights (AutoTokenizer.from_pretrained(...)"
            ".save_pretrained(dir)) or pass --tokenizer=<dir or tokenizer.json>.")
    if os.path.isdir(tokenizer_file):
        tokenizer_file = os.path.join(tokenizer_file, "tokenizer.json")
    if getattr(load_tokenizer_file(tokenizer_file), "eot_id", None) is None:
        raise gpt2.ConversionError(f"{tokenizer_file} has no '<|endoftext|>' token to separate "
                                   "documents; lmjax expects a GPT-2 tokenizer.")
    # The tokenizer travels with the run: data preparation reads it from there (its contents
    # are part of the data cache's fingerprint).
    os.makedirs(os.path.join(workdir, "hf"), exist_ok=True)
    kept = os.path.abspath(os.path.join(workdir, "hf", "tokenizer.json"))
    shutil.copyfile(tokenizer_file, kept)
    cfg.model.update(gpt2.model_settings(hf))
    cfg.data.update(tokenizer="bpe", vocab_size=hf["vocab_size"], tokenizer_file=kept)
    cfg.checkpoint.restore = True
    write_run(cfg, workdir, lambda model: gpt2.params_from_hf(tensors, model), log=log)
    path = os.path.join(workdir, "finetune.py")
    with open(path, "w") as f:
        f.write(f'"""Fine-tunes {source} (converted by python -m lmjax.convert from_hf).\n\n'
                f'    python -m lmjax.main --config={path} --workdir={workdir}\n"""\n\n'
                "import ml_collections\n\n\ndef get_config(preset=None):\n"
                f"    return ml_collections.ConfigDict(\n"
                f"{pprint.pformat(cfg.to_dict(), indent=1, width=96, sort_dicts=False)})\n")
    return path
