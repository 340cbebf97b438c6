"""Conversions between an lmjax run and Hugging Face GPT-2 (the library behind
`python -m lmjax.convert`): export a run, import weights as a run ready to fine-tune."""

from __future__ import annotations

import os
import pprint


def to_hf(workdir: str, out: str, best: bool = False) -> str:
    """Writes a Hugging Face directory for the run in `workdir`: a GPT as GPT2LMHeadModel, a
    BERT masked LM as BertForMaskedLM, a BERT text classifier (LoRA merged) as
    BertForSequenceClassification. Returns what was converted."""
    import jax

    from lmjax.convert import bert, gpt2
    from lmjax.models.gpt import unstack_layers
    from lmjax.train.restore import load_run

    if not os.path.isdir(os.path.join(workdir, "checkpoints")):
        raise gpt2.ConversionError(f"{workdir} has no checkpoints/: give a training run's "
                                   "workdir (not a quantized export).")
    cfg, task, state = load_run(workdir, best=best)
    params = jax.device_get(state.params)
    model = task.model.cfg if cfg.task != "text_classify" else task.base_model.cfg
    if cfg.task == "lm":
        gpt2.write_hf(out, unstack_layers(params, model.num_layers), model, task.tokenizer)
    elif cfg.task == "mlm":
        bert.write_hf(out, params, model, task.tokenizer)
    elif cfg.task == "text_classify":
        if cfg.lora.rank > 0:
            from lmjax.models import lora

            params = lora.merge(params, cfg.lora.rank, cfg.lora.alpha)
        bert.write_hf(out, params, model, task.tokenizer, task.data.class_names)
    else:
        raise gpt2.ConversionError(f"{workdir} is a {cfg.task!r} run: Hugging Face conversion "
                                   "covers GPT (lm), BERT masked LM (mlm) and BERT text "
                                   "classifiers (text_classify).")
    return f"{workdir} ({cfg.task}, step {int(state.step)})"


def _tokenize_with(data_cfg, tokenizer_file: str, log=print) -> None:
    """Prepares the run's data (under its own cache_dir) with a fixed tokenizer file instead of
    one trained on the corpus: prepare() builds the cache, then its token arrays, tokenizer and
    metadata are replaced."""
    import json

    import numpy as np
    from tokenizers import Tokenizer

    from lmjax.data import corpora
    from lmjax.data.prepare import _encode_docs, prepare
    from lmjax.data.tokenizers import BPETokenizer

    prepared = prepare(data_cfg, log=log)
    if os.path.exists(os.path.join(prepared.directory, "pretrained_tokenizer")):
        return
    tokenizer = BPETokenizer(Tokenizer.from_file(tokenizer_file))
    if tokenizer.eot_id is None:
        raise ValueError(f"{tokenizer_file} has no {BPETokenizer.EOT!r} token to separate "
                         "documents; lmjax expects a GPT-2 tokenizer.")
    corpus = corpora.load_corpus(data_cfg)
    log(f"Tokenizing the corpus with {tokenizer_file} ...")
    train, val = _encode_docs(tokenizer, corpus.train), _encode_docs(tokenizer, corpus.val)
    np.save(os.path.join(prepared.directory, "train.npy"), train)
    np.save(os.path.join(prepared.directory, "val.npy"), val)
    tokenizer.save(prepared.directory)
    meta = dict(prepared.meta, vocab_size=tokenizer.vocab_size, train_tokens=int(train.size),
                val_tokens=int(val.size), tokenizer_file=os.path.abspath(tokenizer_file))
    with open(os.path.join(prepared.directory, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    open(os.path.join(prepared.directory, "pretrained_tokenizer"), "w").close()


def write_run(cfg, workdir: str, params_for=None, log=print):
    """Saves step 0 of a run of `cfg` in `workdir`: freshly initialised, or with the parameters
    `params_for(model_cfg)` returns (per-layer layout). Training with `cfg` then resumes it."""
    import jax

    from lmjax import optim
    from lmjax.checkpoint import Checkpointer
    from lmjax.config import validate
    from lmjax.convert import gpt2
    from lmjax.models.gpt import stack_layers
    from lmjax.parallel import mesh as meshlib
    from lmjax.tasks import make_task
    from lmjax.train.state import create_state

    if os.path.exists(os.path.join(workdir, "checkpoints")):
        raise FileExistsError(f"{workdir} already holds checkpoints: choose a new --workdir.")
    validate(cfg)
    task = make_task(cfg, log=log)
    mesh = meshlib.make_mesh(cfg.mesh)
    tx = optim.build_optimizer(cfg.optim, cfg.train.num_steps, matrix_dims=task.matrix_dims,
                               trainable=task.trainable)  # the optimizer load_run rebuilds
    state, _, shardings = create_state(task, tx, mesh, jax.random.PRNGKey(cfg.seed))
    if params_for is not None:
        params = params_for(task.model.cfg)
        if cfg.model.scan_layers:
            params = stack_layers(params, cfg.model.num_layers)
        layout = lambda tree: jax.tree.map(lambda x: x.shape, tree)  # noqa: E731
        if layout(params) != layout(state.params):
            raise gpt2.ConversionError("the converted parameters do not match the model's "
                                       "layout.")
        params = jax.tree.map(lambda x, ref: x.astype(ref.dtype), params, state.params)
        state = state.replace(params=jax.device_put(params, shardings.params))
    with Checkpointer(os.path.join(workdir, "checkpoints")) as ckpt:
        ckpt.save(0, state, cfg.to_dict(), force=True)
    return task


def from_hf(source: str, workdir: str, cfg, log=print) -> str:
    """Writes an lmjax run at step 0 holding the Hugging Face weights; returns finetune.py."""
    from lmjax.config import validate
    from lmjax.convert import gpt2

    if os.path.exists(os.path.join(workdir, "checkpoints")):
        raise FileExistsError(f"{workdir} already holds checkpoints: choose a new --workdir.")
    hf, tensors, tokenizer_file = gpt2.read_hf(source)
    if tokenizer_file is None:
        raise gpt2.ConversionError(f"{source} has no tokenizer.json (the fast tokenizer file); "
                                   "it is needed to tokenize the fine-tuning data.")
    cfg.model.update(gpt2.model_settings(hf))
    cfg.data.update(tokenizer="bpe", vocab_size=hf["vocab_size"],
                    cache_dir=os.path.join(os.path.abspath(workdir), "data"))
    cfg.checkpoint.restore = True
    validate(cfg)  # before the (possibly long) tokenization
    _tokenize_with(cfg.data, tokenizer_file, log=log)
    write_run(cfg, workdir, lambda model: gpt2.params_from_hf(tensors, model), log=log)
    path = os.path.join(workdir, "finetune.py")
    with open(path, "w") as f:
        f.write(f'"""Fine-tunes {source} (converted by python -m lmjax.convert from_hf).\n\n'
                f'    python -m lmjax.main --config={path} --workdir={workdir}\n"""\n\n'
                "import ml_collections\n\n\ndef get_config(preset=None):\n"
                f"    return ml_collections.ConfigDict(\n"
                f"{pprint.pformat(cfg.to_dict(), indent=1, width=96, sort_dicts=False)})\n")
    return path
