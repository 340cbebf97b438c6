"""Conversions between an lmjax run and Hugging Face (the library behind
`lmjax convert`): export a run, import GPT-2 or BERT weights as a run ready to
fine-tune (GPT-2: in place; BERT: as the init_from of configs/classify.py)."""

from __future__ import annotations

import json
import os
import pprint
import shutil
from typing import Callable

import jax
import jax.numpy as jnp
import ml_collections

from lmjax import rundir
from lmjax.checkpoint import Checkpointer
from lmjax.convert import bert, decoders, gpt2
from lmjax.data.tokenizers import BPETokenizer, WordPieceTokenizer, load_tokenizer_file
from lmjax.models.bert import BertConfig
from lmjax.models.decoder import DecoderConfig
from lmjax.models.gpt import GPTConfig, stack_layers, unstack_layers
from lmjax.tasks import require_task
from lmjax.tasks.base import MASKED_LM, TEXT_CLASSES
from lmjax.tasks.lm import COMPUTE_FIELDS
from lmjax.train.restore import load_setup
from lmjax.train.setup import setup
from lmjax.train.state import TrainState


# What writes a language model's weights as Hugging Face's, by its config's type.
LM_WRITERS = {GPTConfig: gpt2.write_hf, DecoderConfig: decoders.write_hf}


def write_lm(out: str, params: dict, model, tokenizer=None) -> None:
    """A GPT (as GPT2LMHeadModel) or a decoder family's model (as its class) with `params`,
    scanned or not, written to `out`: what to_hf writes, and bench_generate --hf_compare."""
    LM_WRITERS[type(model)](out, unstack_layers(params, model.num_layers), model, tokenizer)


def to_hf(workdir: str, out: str, best: bool = False) -> str:
    """Writes a Hugging Face directory for the run in `workdir`: a GPT as GPT2LMHeadModel, a
    decoder family's model as its class (LlamaForCausalLM, ...; LoRA merged), a BERT masked LM
    as BertForMaskedLM, a BERT text classifier (LoRA merged) as
    BertForSequenceClassification. Reads the run directory only. Returns what was converted."""
    if not os.path.isdir(rundir.checkpoint_dir(workdir)):
        raise gpt2.ConversionError(f"{workdir} has no checkpoints/: give a training run's "
                                   "workdir (not a quantized export).")
    s, state = load_setup(workdir, best=best)
    cfg, task = s.cfg, s.task
    model = task.model_config
    _, params = task.plain_model(jax.device_get(state.params))  # LoRA merged
    if type(model) in LM_WRITERS:
        write_lm(out, params, model, task.tokenizer)
    elif MASKED_LM in task.capabilities:
        bert.write_hf(out, params, model, task.tokenizer)
    elif TEXT_CLASSES in task.capabilities:
        bert.write_hf(out, params, model, task.tokenizer, task.class_names)
    else:
        raise gpt2.ConversionError(f"{workdir} is a {cfg.task!r} run of a "
                                   f"{type(model).__name__.replace('Config', '')} model: "
                                   "Hugging Face conversion covers GPT and decoder-family "
                                   "language models (lm, sft), BERT masked LMs (mlm) and BERT "
                                   "text classifiers (text_classify).")
    return f"{workdir} ({cfg.task}, step {int(state.step)})"


def write_run(cfg, workdir: str, params_for=None, log=print, assets=None, fresh=()):
    """Saves step 0 of a run of `cfg` in `workdir` (its run directory: assets and checkpoint):
    freshly initialised, or with the parameters `params_for(model_cfg)` returns (per-layer
    layout; the top-level parts named in `fresh` may be missing: they keep their
    initialisation). `assets` builds the task without reading data. Training with `cfg` then
    resumes it."""
    if os.path.exists(rundir.checkpoint_dir(workdir)):
        raise FileExistsError(f"{workdir} already holds checkpoints: choose a new --workdir.")
    s = setup(cfg, assets=assets, log=log)
    state = s.new_state()
    if params_for is not None:
        params = params_for(s.task.model_config)
        if cfg.model.get("scan_layers", False):
            params = stack_layers(params, cfg.model.num_layers)
        if fresh:  # parts the source does not have keep their initialisation
            kept = jax.device_get({k: state.params[k] for k in fresh if k not in params})
            params = {**kept, **params}
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


def hf_kind(source: str) -> str:
    """What a Hugging Face model directory (or Hub id) holds: 'gpt2', 'decoder' (Llama, Qwen,
    Mistral, Gemma), 'text_classify' (BertForSequenceClassification) or 'mlm' (other BERTs).
    Anything else is refused by its architecture."""
    directory = gpt2.resolve_source(source)
    path = os.path.join(directory, "config.json")
    if not os.path.exists(path):
        raise gpt2.ConversionError(f"{directory} has no config.json (save the model with "
                                   "save_pretrained).")
    with open(path) as f:
        config = json.load(f)
    if config.get("model_type") == "bert":
        return ("text_classify" if "BertForSequenceClassification" in
                config.get("architectures", []) else "mlm")
    if config.get("model_type", "gpt2") == "gpt2":
        return "gpt2"
    decoders.model_settings(config)  # refuses, by name, what is not a family lmjax converts
    return "decoder"


def task_of(kind: str) -> str:
    """The lmjax task a kind of Hugging Face model (`hf_kind`) converts to: 'lm' (GPT-2 and
    the decoder families), 'text_classify' (BertForSequenceClassification) or 'mlm' (other
    BERTs)."""
    return "lm" if kind in ("gpt2", "decoder") else kind


def from_hf(source: str, workdir: str, cfg, tokenizer: str = "", log=print,
            config_for: Callable[[str], ml_collections.ConfigDict] | None = None) -> str:
    """Writes an lmjax run at step 0 holding the Hugging Face weights: GPT-2, whose data are
    tokenized by GPT-2's own tokenizer (returns the path of its finetune.py), or BERT
    (returns the command that fine-tunes a classifier from it). `cfg` None: the training
    config is `config_for(task)`."""
    if os.path.exists(rundir.checkpoint_dir(workdir)):
        raise FileExistsError(f"{workdir} already holds checkpoints: choose a new --workdir.")
    kind = hf_kind(source)
    task = task_of(kind)
    if cfg is None:
        cfg = config_for(task)
    if kind == "decoder":
        return _from_hf_decoder(source, workdir, cfg, tokenizer, log)
    if task != "lm":
        return _from_hf_bert(source, workdir, cfg, task, tokenizer, log)
    hf, tensors, tokenizer_file = gpt2.read_hf(source)
    directory = gpt2.resolve_source(source)
    if tokenizer_file is None and all(os.path.exists(os.path.join(directory, f))
                                      for f in ("vocab.json", "merges.txt")):
        tokenizer_file = directory  # the original release's files, without tokenizer.json
    tokenizer_file = tokenizer or tokenizer_file
    if tokenizer_file is None:
        raise gpt2.ConversionError(
            f"{source} has no tokenizer.json (the fast tokenizer file), which tokenizes the "
            "fine-tuning data: save one beside the weights (AutoTokenizer.from_pretrained(...)"
            ".save_pretrained(dir)) or pass --tokenizer=<dir or tokenizer.json>.")
    if os.path.isdir(tokenizer_file) and os.path.exists(
            os.path.join(tokenizer_file, "tokenizer.json")):
        tokenizer_file = os.path.join(tokenizer_file, "tokenizer.json")
    tok = load_tokenizer_file(tokenizer_file)  # a directory: GPT-2's vocab.json + merges.txt
    if getattr(tok, "eot_id", None) is None:
        raise gpt2.ConversionError(f"{tokenizer_file} has no '<|endoftext|>' token to separate "
                                   "documents; lmjax expects a GPT-2 tokenizer.")
    # The tokenizer travels with the run: data preparation reads it from there (its contents
    # are part of the data cache's fingerprint).
    os.makedirs(os.path.join(workdir, "hf"), exist_ok=True)
    kept = os.path.abspath(os.path.join(workdir, "hf", "tokenizer.json"))
    if os.path.isdir(tokenizer_file):
        tok.save(os.path.dirname(kept))
    else:
        shutil.copyfile(tokenizer_file, kept)
    cfg.model.update(gpt2.model_settings(hf))
    cfg.data.update(tokenizer="bpe", vocab_size=hf["vocab_size"], tokenizer_file=kept)
    cfg.checkpoint.restore = True
    write_run(cfg, workdir, lambda model: gpt2.params_from_hf(tensors, model), log=log)
    path = os.path.join(workdir, "finetune.py")
    with open(path, "w") as f:
        f.write(f'"""Fine-tunes {source} (converted by lmjax convert from_hf).\n\n'
                f'    lmjax train --config={path} --workdir={workdir}\n"""\n\n'
                "import ml_collections\n\n\ndef get_config(preset=None):\n"
                f"    return ml_collections.ConfigDict(\n"
                f"{pprint.pformat(cfg.to_dict(), indent=1, width=96, sort_dicts=False)})\n")
    return path


def _from_hf_bert(source: str, workdir: str, cfg, task: str, tokenizer: str, log) -> str:
    """A Hugging Face BERT as an lmjax run at step 0: BertForSequenceClassification as a
    text classifier (pooler, head and class names included), BertForMaskedLM / BertModel as a
    masked LM (a BertModel's MLM head freshly initialised). Its tokenizer (vocab.txt or
    tokenizer.json beside the weights, or --tokenizer) becomes the run's."""
    require_task(cfg, task, f"{source} converts to a {task!r} run", gpt2.ConversionError)
    directory = gpt2.resolve_source(source)
    hf, tensors, _ = gpt2.read_hf(directory)
    head = bert.head_of_hf(bert.normalise(tensors))
    tokenizer_dir = tokenizer or directory
    tok = _read_tokenizer(tokenizer_dir)
    if not isinstance(tok, WordPieceTokenizer):
        raise gpt2.ConversionError(f"{tokenizer_dir} is not a WordPiece tokenizer: a BERT needs "
                                   "its vocab.txt / tokenizer.json with [CLS], [SEP], [PAD].")
    settings = bert.model_settings(hf)
    if tok.vocab_size > settings["vocab_size"] or tok.pad_id != settings["pad_id"]:
        raise gpt2.ConversionError(
            f"the tokenizer in {tokenizer_dir} ({tok.vocab_size} tokens, [PAD] {tok.pad_id}) "
            f"does not belong to this model ({settings['vocab_size']} embeddings, pad_token_id "
            f"{settings['pad_id']}).")
    names = None
    if task == "text_classify":
        labels = {int(k): v for k, v in (hf.get("id2label") or {}).items()}
        num = len(labels) or hf.get("num_labels", 2)
        if num < 2 or hf.get("problem_type") not in (None, "single_label_classification"):
            raise gpt2.ConversionError(f"{source}: lmjax converts single-label classifiers with "
                                       f"2 or more classes (num_labels={num}, problem_type="
                                       f"{hf.get('problem_type')!r}).")
        names = [str(labels.get(i, f"LABEL_{i}")) for i in range(num)]
    kept = os.path.abspath(os.path.join(workdir, "hf"))
    os.makedirs(kept, exist_ok=True)
    tok.save(kept)  # the run keeps the tokenizer it was converted with
    with cfg.unlocked():
        cfg.model.update(settings)
        if task == "text_classify":
            cfg.model.pooling = "cls"  # BertForSequenceClassification's
        cfg.data.update(tokenizer_file=os.path.join(kept, "tokenizer.json"))
        cfg.hf_source = source
        cfg.checkpoint.restore = True
    model_cfg = BertConfig.from_section(cfg.model, num_classes=len(names or []))
    assets = rundir.Assets(task=task, model=model_cfg.to_dict(), config=cfg.to_dict(),
                           tokenizer=tok, class_names=names)

    def params_for(model):
        params = bert.params_from_hf(tensors, model)
        if task == "mlm":
            params.pop("pooler", None)  # BertModel's: MaskedLM has none
        return params

    fresh = ("mlm_dense", "mlm_ln", "mlm_bias") if head == "encoder" else ()
    if fresh:
        log(f"{source} is a BertModel: the masked-LM head of the run starts fresh (the encoder "
            "is what configs/classify.py's init_from takes).")
    write_run(cfg, workdir, params_for, log=log, assets=assets, fresh=fresh)
    return ("lmjax train --config=configs/classify.py:hf_sentiment "
            f"--config.init_from={workdir} --config.data.files=<train.csv> --workdir=<new dir>")


def _read_tokenizer(path: str):
    """The tokenizer beside a checkpoint (or given by --tokenizer), or one line saying how to
    provide it."""
    try:
        return load_tokenizer_file(path)
    except (ValueError, OSError) as e:
        raise gpt2.ConversionError(
            f"{path}: {e} The tokenizer encodes the fine-tuning data and drives generation: "
            "save it beside the weights (AutoTokenizer.from_pretrained(...).save_pretrained(dir))"
            " or pass --tokenizer=<dir or tokenizer.json>.") from None


def _from_hf_decoder(source: str, workdir: str, cfg, tokenizer: str, log) -> str:
    """A Llama / Qwen / Mistral / Gemma checkpoint as an lmjax run at step 0 (task lm): its
    weights, streamed (decoders.load_params), its tokenizer with its special tokens and chat
    template. The run keeps the weights alone (its optimizer section is plain SGD, whose state
    is a step count), so that importing holds about one copy of them; training starts from it
    with init_from. Returns the command that fine-tunes it."""
    require_task(cfg, "lm", f"{source} converts to an 'lm' run", gpt2.ConversionError)
    directory = gpt2.resolve_source(source)
    settings = decoders.read_settings(directory)  # refuses before any weight is read
    tokenizer_dir = tokenizer or directory
    tok = _read_tokenizer(tokenizer_dir)
    if not isinstance(tok, BPETokenizer) or tok.eot_id is None:
        raise gpt2.ConversionError(f"{tokenizer_dir}: lmjax needs the model's tokenizer.json "
                                   "with its eos token (tokenizer_config.json's eos_token).")
    if tok.vocab_size > settings["vocab_size"]:
        raise gpt2.ConversionError(f"the tokenizer in {tokenizer_dir} has {tok.vocab_size} "
                                   f"tokens, more than this model's {settings['vocab_size']} "
                                   "embeddings: it is not this model's tokenizer.")
    kept = os.path.abspath(os.path.join(workdir, "hf"))
    os.makedirs(kept, exist_ok=True)
    tok.save(kept)  # the tokenizer and its settings, for data preparation
    block = min(cfg.model.get("block_size", 0) or settings["context_limit"],
                settings["context_limit"])
    with cfg.unlocked():
        cfg.model = ml_collections.ConfigDict({
            # --config says how to compute (lm.COMPUTE_FIELDS); config.json what the model is
            **settings, **{k: cfg.model[k] for k in COMPUTE_FIELDS if k in cfg.model and
                           k != "block_size"},
            "block_size": block})
        cfg.data.update(tokenizer_file=kept)
        cfg.optim.update(name="sgd", momentum=0.0, weight_decay=0.0)
        cfg.hf_source = source
    model_cfg = DecoderConfig.from_section(cfg.model)
    assets = rundir.Assets(task="lm", model=model_cfg.to_dict(), config=cfg.to_dict(),
                           tokenizer=tok)
    s = setup(cfg, assets=assets, log=log)  # shapes and shardings only: no weights yet
    params = decoders.load_params(directory, s.task.model_config, s.shardings.params)
    opt_state = jax.jit(s.tx.init, out_shardings=s.shardings.opt_state)(params)
    state = TrainState(step=jax.device_put(jnp.zeros((), jnp.int32), s.shardings.step),
                       params=params, opt_state=opt_state, model_state={})
    rundir.write(workdir, s.task.run_assets())
    # uncompressed: Orbax would hold the compressed weights in memory until written
    with Checkpointer(rundir.checkpoint_dir(workdir), compress=False) as ckpt:
        ckpt.save(0, state, cfg.to_dict(), force=True)
    return (f"lmjax train --config=configs/llama.py:finetune --config.init_from={workdir} "
            "--workdir=<new dir>")
