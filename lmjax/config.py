"""Checks on a resolved config, so that mistakes fail at start-up with the field's name."""

from __future__ import annotations

import warnings

import ml_collections
from ml_collections import config_dict

# Renamed fields of the train section: old name -> new name.
RENAMED_TRAIN = {"eval_windows": "eval_examples", "final_eval_windows": "final_eval_examples"}


class ConfigError(ValueError):
    pass


def require(ok: bool, message: str) -> None:
    if not ok:
        raise ConfigError(message)


def load_config(spec: str) -> ml_collections.ConfigDict:
    """A config from 'configs/x.py' or 'configs/x.py:preset', as --config reads it (for notebooks
    and scripts; overrides are plain attribute assignments afterwards)."""
    import runpy

    path, _, preset = spec.partition(":")
    get_config = runpy.run_path(path)["get_config"]
    return get_config(preset) if preset else get_config()


def from_stored(stored: dict) -> ml_collections.ConfigDict:
    """A config saved by a run (checkpoint metadata, run.json), in today's field names: a run
    written by an earlier lmjax keeps loading."""
    cfg = ml_collections.ConfigDict(stored)
    base = base_config()
    with cfg.unlocked():
        # Sections and fields added since the run was written take today's defaults (which
        # leave every newer switch off).
        for section, fields in base.items():
            if not isinstance(fields, ml_collections.ConfigDict):
                continue
            if section not in cfg:
                cfg[section] = ml_collections.ConfigDict(fields.to_dict())
                continue
            for key, value in fields.items():
                if key not in cfg[section]:
                    cfg[section][key] = value
        for old, new in RENAMED_TRAIN.items():
            if cfg.train.get(old) is not None:
                cfg.train[new], cfg.train[old] = cfg.train[old], None
        # Before federated averaging ran in the shared loop, every config carried a federated
        # section (with its own rounds): a stored one is not a sign of a federated run.
        if "federated" in cfg and "rounds" in cfg.federated:
            del cfg["federated"]
        data = cfg.data
        if "kfold" in data:  # before data.num_folds / data.fold (-1: every fold)
            if data.get("num_folds", 0) < 2:
                data.num_folds = data.kfold if data.kfold > 1 else 0
                data.fold = -1
            del data["kfold"]
    return cfg


def base_config() -> ml_collections.ConfigDict:
    """The sections every experiment shares, with neutral defaults; configs/*.py start from it
    and set what their model family needs (see configs/gpt.py for every field explained)."""
    c = ml_collections.ConfigDict()
    c.task = ""                    # the model family and loss: see lmjax/tasks/__init__.py
    c.seed = 0
    c.init_from = ""               # a workdir whose weights start this run (fine-tuning)
    c.compilation_cache = ""       # a directory: compiled steps are kept there and reused by
    #                                later runs (JAX's persistent cache); '' keeps none

    c.data = ml_collections.ConfigDict()
    c.data.name = ""
    c.data.cache_dir = ""          # prepared arrays; default ~/.cache/lmjax/data
    c.data.num_folds = 0           # > 1: k-fold cross-validation (tasks with example splits)
    c.data.fold = -1               # with num_folds: -1 trains every fold in turn; i: fold i only
    c.data.prefetch = 2            # training batches built and placed on the devices ahead (0: none)

    c.model = ml_collections.ConfigDict()

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 1000
    c.train.batch_size = 32        # global batch
    c.train.grad_accum = 1         # micro-batches per step (batch_size must divide by it)
    c.train.loss_chunk = 0         # GPT: positions per piece of output layer + loss (0: all at
    #                                once); bounds the logits in memory to batch x chunk x vocab
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_examples = 0      # examples (LM: windows) per periodic evaluation; 0: all
    c.train.final_eval_examples = 0  # the same for the final evaluation; 0: the whole split
    for old in RENAMED_TRAIN:      # deprecated names, still accepted (validate() says so)
        c.train[old] = config_dict.placeholder(int)
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
    # N >= 0: resume from step N rather than the latest (e.g. when the latest is damaged); the
    # later steps are renamed '<step>.set-aside', never deleted (docs/faults.md).
    c.checkpoint.restore_step = -1

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


def text_data(**fields) -> ml_collections.ConfigDict:
    """The `data` fields of a text corpus (configs/gpt.py, bert.py, lstm.py), with `fields`
    changed: `c.data.update(text_data(tokenizer="bpe", vocab_size=4096))`."""
    d = ml_collections.ConfigDict()
    d.name = "shakespeare"         # 'shakespeare' | 'files' | 'tfds:<name>' (e.g. tfds:lm1b) |
    #                                'shards' | 'stream' (docs/data.md)
    d.files = ""                   # with name='files': comma-separated paths or globs
    d.val_fraction = 0.1           # with name='files': share held out (whole files where several)
    d.text_key = "text"            # with tfds: the feature that holds the text
    d.max_examples = 0             # with tfds: read at most this many documents per split (0: all)
    d.val_split = ""               # with tfds: the held-out split ('': validation, else test)
    d.tokenizer = "char"           # 'char' | 'bpe' | 'wordpiece', trained on the training split
    d.vocab_size = 0               # with bpe and wordpiece: the vocabulary size to train
    d.tokenizer_file = ""          # a fixed tokenizer instead of training one: a tokenizer.json or
    #                                a Hugging Face tokenizer directory (GPT-2's, BERT's vocab.txt)
    d.scrub_pii = False            # mask e-mails, phones, cards, IBANs, IPs, URLs, IDs and names with
    #                                typed placeholders (<EMAIL>...) before tokenizing (lmjax/data/
    #                                pii.py; the 'privacy' extra; not with shards or stream)
    # name='shards': train on token shards (docs/data.md): llm.c .bin, nanoGPT train.bin, or
    # a folder from `lmjax prepare_data`
    d.shards = ""                  # a glob of training shards, or a prepared folder
    d.val_shards = ""              # '': the shards glob with 'train' replaced by 'val'
    d.max_val_tokens = 10_485_760  # with shards: validate on at most the first this many tokens
    # name='stream': a corpus too big for memory, prepared in parallel into shards (data.files
    # lists .jsonl[.gz], .parquet, text files or saved HF datasets; docs/data.md)
    d.num_workers = 0              # tokenizing processes (0: one per core)
    d.shard_tokens = 100_000_000   # tokens per shard (llm.c's size)
    d.chunk_bytes = 4_000_000      # text per task sent to a worker (memory: ~2 per worker)
    d.tokenizer_sample_bytes = 50_000_000  # a trained tokenizer sees this much training text
    d.clean = ml_collections.ConfigDict()
    d.clean.normalize = True       # NFC, '\n' line ends, no trailing spaces, <= 1 blank line
    d.clean.min_words = 50         # Gopher's quality rules (lmjax/data/clean.py)
    d.clean.max_words = 100_000
    d.clean.min_mean_word_length = 3.0
    d.clean.max_mean_word_length = 10.0
    d.clean.min_alpha_words = 0.8  # share of words with a letter
    d.clean.max_duplicate_lines = 0.3
    d.clean.dedup = "near"         # 'none' | 'exact' (hash) | 'near' (also MinHash LSH)
    d.clean.near_threshold = 0.8   # Jaccard similarity of word 5-grams
    d.clean.num_perm = 64          # MinHash hash functions (LSH bands from datasketch)
    d.update(fields)
    return d


def bert_model(**fields) -> ml_collections.ConfigDict:
    """BERT's `model` section (lmjax.models.bert.BertConfig), shared by configs/bert.py and
    configs/classify.py: a fine-tuned encoder must have the pretrained one's shape."""
    m = ml_collections.ConfigDict()
    m.vocab_size = 0          # 0: taken from the tokenizer
    m.block_size = 128        # sequence length incl. [CLS] and [SEP]; also the position table
    m.num_layers = 4
    m.num_heads = 4
    m.d_model = 128
    m.mlp_ratio = 4
    m.dropout = 0.1           # embeddings, attention output, MLP output, classifier input
    m.use_bias = True
    m.type_vocab_size = 2     # segment embeddings (BERT's sentence A/B); 0: none
    m.layer_norm_eps = 1e-12  # BERT's
    m.pad_id = 0              # [PAD]: never attended to
    m.pooling = "cls"         # classifier input: 'cls' ([CLS] + tanh pooler) | 'mean'
    m.dtype = "float32"       # compute dtype; 'bfloat16' on accelerators
    m.param_dtype = "float32"
    m.attention = "auto"      # 'auto' | 'xla' | 'cudnn' (jax.nn.dot_product_attention)
    m.update(fields)
    return m


def validate(c: ml_collections.ConfigDict) -> None:
    """Checks the sections every run has, then those of the model family's config."""
    t = c.train
    require(t.num_steps > 0, f"train.num_steps={t.num_steps}: must be a positive number of steps.")
    require(t.batch_size > 0, f"train.batch_size={t.batch_size}: must be positive.")
    require(t.grad_accum > 0 and t.batch_size % t.grad_accum == 0,
            f"train.grad_accum={t.grad_accum}: must be positive and divide "
            f"train.batch_size={t.batch_size}.")
    require(t.loss_chunk >= 0, f"train.loss_chunk={t.loss_chunk}: positions per chunk, >= 0 "
            "(0: the whole sequence at once).")
    for name in ("log_every", "eval_every"):
        require(t[name] > 0, f"train.{name}={t[name]}: must be positive.")
    for old, new in RENAMED_TRAIN.items():
        if t.get(old) is not None:
            warnings.warn(f"train.{old} is deprecated: it is now train.{new} (it counts "
                          "examples: windows for language models, passages or images for "
                          "classifiers). Using its value.", FutureWarning, stacklevel=2)
            t[new], t[old] = t[old], None
    require(t.eval_examples >= 0 and t.final_eval_examples >= 0,
            "train.eval_examples and train.final_eval_examples must be >= 0 (0: the whole "
            "split).")
    require(t.early_stopping_mode in ("min", "max"),
            f"train.early_stopping_mode={t.early_stopping_mode!r}: use 'min' or 'max'.")
    require(t.patience >= 0, f"train.patience={t.patience}: evaluations, >= 0 (0: never stop).")
    require(t.patience == 0 or t.early_stopping_metric,
            "train.patience needs train.early_stopping_metric (e.g. 'loss').")
    require(c.data.num_folds == 0 or c.data.num_folds >= 2,
            f"data.num_folds={c.data.num_folds}: 0 (no cross-validation) or at least 2 folds.")
    require(c.data.fold == -1 or 0 <= c.data.fold < c.data.num_folds,
            f"data.fold={c.data.fold}: -1 (every fold in turn) or a fold below "
            f"data.num_folds={c.data.num_folds}.")
    require(c.data.prefetch >= 0, f"data.prefetch={c.data.prefetch}: batches to build ahead, "
            ">= 0 (0: build each batch when the step needs it).")
    require(c.checkpoint.every > 0, f"checkpoint.every={c.checkpoint.every}: must be positive.")
    require(c.checkpoint.keep > 0, f"checkpoint.keep={c.checkpoint.keep}: must be positive.")
    restore_step = c.checkpoint.get("restore_step", -1)  # absent from configs stored earlier
    require(restore_step >= -1, f"checkpoint.restore_step={restore_step}: a saved step, or -1 "
            "(the latest).")
    require(restore_step == -1 or c.checkpoint.restore, "checkpoint.restore_step needs "
            "checkpoint.restore=True.")
    if "sample" in c:
        require(c.sample.num_samples >= 0 and c.sample.max_new_tokens >= 0,
                "sample.num_samples and sample.max_new_tokens must be >= 0.")
        require(c.sample.temperature >= 0,
                f"sample.temperature={c.sample.temperature}: must be >= 0.")


def check_text_data(d: ml_collections.ConfigDict) -> None:
    """The `data` section of a text corpus (text_data): the tokenizer and the source's fields."""
    require(not d.tokenizer.startswith("hf:"),
            f"data.tokenizer={d.tokenizer!r}: a pretrained tokenizer is given as "
            f"data.tokenizer_file={d.tokenizer[3:]!r} (a Hugging Face tokenizer directory or "
            "tokenizer.json).")
    require(d.tokenizer in ("char", "bpe", "wordpiece"),
            f"data.tokenizer={d.tokenizer!r}: use 'char', 'bpe' or 'wordpiece'.")
    require(d.tokenizer != "wordpiece" or d.vocab_size >= 64,
            f"data.vocab_size={d.vocab_size}: WordPiece needs at least 64 (try 4096).")
    require(d.tokenizer != "bpe" or d.vocab_size >= 256 + 1,
            f"data.vocab_size={d.vocab_size}: byte-level BPE needs at least 257.")
    require(0.0 < d.val_fraction < 1.0,
            f"data.val_fraction={d.val_fraction}: must be between 0 and 1.")
    require(d.get("max_val_tokens", 0) >= 0, f"data.max_val_tokens={d.get('max_val_tokens')}: "
            "a number of tokens, >= 0 (0: the whole validation split).")
