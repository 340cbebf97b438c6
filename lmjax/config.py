"""Checks on a resolved config, so that mistakes fail at start-up with the field's name."""

from __future__ import annotations

import ml_collections


class ConfigError(ValueError):
    pass


def _require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """A config from 'configs/x.py' or 'configs/x.py:preset', as --config reads it (for notebooks
    and scripts; overrides are plain attribute assignments afterwards)."""
    import runpy

    path, _, preset = spec.partition(":")
    get_config = runpy.run_path(path)["get_config"]
    return get_config(preset) if preset else get_config()


def base_config() -> ml_collections.ConfigDict:
    """The sections every experiment shares, with neutral defaults; configs/*.py start from it
    and set what their model family needs (see configs/gpt.py for every field explained)."""
    c = ml_collections.ConfigDict()
    c.task = ""                    # the model family and loss: see lmjax/tasks/__init__.py
    c.seed = 0
    c.init_from = ""               # a workdir whose weights start this run (fine-tuning)

    c.data = ml_collections.ConfigDict()
    c.data.name = ""
    c.data.cache_dir = ""          # prepared arrays; default ~/.cache/lmjax/data
    c.data.kfold = 0               # > 1: k-fold cross-validation (tasks with example splits)
    c.data.fold = 0                # which fold is held out (set by the cross-validation driver)
    c.data.prefetch = 2            # training batches built and placed on the devices ahead (0: none)

    c.model = ml_collections.ConfigDict()

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 32        # global batch
    c.train.grad_accum = 1         # micro-batches per step (batch_size must divide by it)
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_windows = 0       # examples (LM: windows) per periodic evaluation; 0: all
    c.train.final_eval_windows = 0 # the same for the final evaluation; 0: the whole split
    c.train.early_stopping_metric = ""  # e.g. 'loss': keep the best checkpoint in <workdir>/best
    c.train.early_stopping_mode = "min" # 'min' | 'max' (for accuracy, F1, ...)
    c.train.patience = 0           # stop after this many evaluations without improvement (0: never)

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"         # 'muon' | 'adamw' | 'adam' | 'sgd' | 'rmsprop'
    c.optim.learning_rate = 1e-3   # peak; with muon, the rate of everything but weight matrices
    c.optim.schedule = "cosine"    # after warmup: 'cosine' | 'linear' | 'constant'
    c.optim.warmup_steps = 100
    c.optim.end_lr_ratio = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.momentum = 0.9         # muon, sgd and rmsprop
    c.optim.muon_learning_rate = 0.02  # muon: peak rate of the weight matrices
    c.optim.rms_decay = 0.9        # rmsprop
    c.optim.weight_decay = 0.0     # decoupled; never on biases, norms or embeddings
    c.optim.clip_norm = 1.0        # global-norm clipping; 0 disables
    c.optim.l1 = 0.0
    c.optim.l2 = 0.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1               # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.host_cpu_devices = -1   # CPU-only hosts: one device per core (-1), or N; 0: JAX's default

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every = 500       # steps between saves (also saved at the end and on SIGTERM)
    c.checkpoint.keep = 3
    c.checkpoint.restore = True    # resume from the workdir's latest checkpoint if there is one

    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False   # True on multi-host TPU pods and GPU clusters
    c.distributed.coordinator_address = ""
    c.distributed.num_processes = 1
    c.distributed.process_id = 0
    c.distributed.cpu_devices_per_process = 0  # > 0: simulate hosts with CPU devices (tests)

    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = True
    c.log.progress_bar = True
    c.log.wandb = False            # also log to Weights & Biases (pip install wandb)
    c.log.wandb_project = "lmjax"
    c.log.wandb_mode = "online"    # 'online' | 'offline' (sync later: wandb sync) | 'disabled'
    return c


def validate(c: ml_collections.ConfigDict) -> None:
    """Checks the sections every run has, then those of the model family's config."""
    t = c.train
    _require(t.num_steps > 0, f"train.num_steps={t.num_steps}: must be a positive number of steps.")
    _require(t.batch_size > 0, f"train.batch_size={t.batch_size}: must be positive.")
    _require(t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
             f"train.grad_accum={t.grad_accum}: must be positive and divide "
             f"train.batch_size={t.batch_size}.")
    for name in ("log_every", "eval_every"):
        _require(t[name] > 0, f"train.{name}={t[name]}: must be positive.")
    _require(t.eval_windows >= 0 and t.final_eval_windows >= 0,
             "train.eval_windows and train.final_eval_windows must be >= 0 (0: the whole split).")
    _require(t.early_stopping_mode in ("min", "max"),
             f"train.early_stopping_mode={t.early_stopping_mode!r}: use 'min' or 'max'.")
    _require(t.patience >= 0, f"train.patience={t.patience}: evaluations, >= 0 (0: never stop).")
    _require(t.patience == 0 or t.early_stopping_metric,
             "train.patience needs train.early_stopping_metric (e.g. 'loss').")
    _require(c.data.kfold == 0 or c.data.kfold >= 2,
             f"data.kfold={c.data.kfold}: 0 (no cross-validation) or at least 2 folds.")
    _require(c.data.prefetch >= 0, f"data.prefetch={c.data.prefetch}: batches to build ahead, "
             ">= 0 (0: build each batch when the step needs it).")
    _require(c.checkpoint.every > 0, f"checkpoint.every={c.checkpoint.every}: must be positive.")
    _require(c.checkpoint.keep > 0, f"checkpoint.keep={c.checkpoint.keep}: must be positive.")
    m = c.model
    _require(0.0 <= m.get("dropout", 0.0) < 1.0, f"model.dropout={m.get('dropout')}: must be in [0, 1).")
    if "num_heads" in m:
        _validate_transformer(m)
    if "tokenizer" in c.data:
        _validate_text_data(c.data)
    if "sample" in c:
        _require(c.sample.num_samples >= 0 and c.sample.max_new_tokens >= 0,
                 "sample.num_samples and sample.max_new_tokens must be >= 0.")
        _require(c.sample.temperature >= 0,
                 f"sample.temperature={c.sample.temperature}: must be >= 0.")


def _validate_transformer(m: ml_collections.ConfigDict) -> None:
    for name in ("block_size", "num_layers", "num_heads", "d_model", "mlp_ratio"):
        _require(m[name] > 0, f"model.{name}={m[name]}: must be positive.")
    _require(m.d_model % m.num_heads == 0,
             f"model.d_model={m.d_model} must be divisible by model.num_heads={m.num_heads}.")
    _require(m.vocab_size >= 0, f"model.vocab_size={m.vocab_size}: 0 (from the tokenizer) or more.")
    for name in ("dtype", "param_dtype"):
        _require(m[name] in ("float32", "bfloat16", "float16"),
                 f"model.{name}={m[name]!r}: use 'float32', 'bfloat16' or 'float16'.")
    _require(m.attention in ("auto", "xla", "cudnn"),
             f"model.attention={m.attention!r}: use 'auto', 'xla' or 'cudnn'.")
    _require(m.get("remat", "none") in ("none", "dots", "full"),
             f"model.remat={m.get('remat')!r}: use 'none', 'dots' or 'full'.")


def _validate_text_data(d: ml_collections.ConfigDict) -> None:
    _require(d.tokenizer in ("char", "bpe", "wordpiece"),
             f"data.tokenizer={d.tokenizer!r}: use 'char', 'bpe' or 'wordpiece'.")
    _require(d.tokenizer != "wordpiece" or d.vocab_size >= 64,
             f"data.vocab_size={d.vocab_size}: WordPiece needs at least 64 (try 4096).")
    _require(d.tokenizer != "bpe" or d.vocab_size >= 256 + 1,
             f"data.vocab_size={d.vocab_size}: byte-level BPE needs at least 257.")
    _require(0.0 < d.val_fraction < 1.0,
             f"data.val_fraction={d.val_fraction}: must be between 0 and 1.")
