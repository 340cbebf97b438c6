"""GPT language models.

    python -m lmjax.main --config=configs/gpt.py                 # the CPU default (Shakespeare, chars)
    python -m lmjax.main --config=configs/gpt.py:gpt2_124m       # GPT-2 small, for accelerators
    python -m lmjax.main --config=configs/gpt.py --config.train.num_steps=5000 --config.model.num_layers=6

Every field below can be overridden from the command line as --config.<section>.<field>=value.
"""

import ml_collections


def get_config(preset: str = "cpu") -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.task = "lm"  # the model family and loss; see lmjax/train/tasks.py
    c.seed = 0

    c.data = ml_collections.ConfigDict()
    c.data.name = "shakespeare"    # 'shakespeare' | 'files' | 'tfds:<name>' (e.g. tfds:lm1b)
    c.data.files = ""              # with name='files': comma-separated paths or globs
    c.data.val_fraction = 0.1      # with name='files': share held out (whole files where several)
    c.data.text_key = "text"       # with tfds: the feature that holds the text
    c.data.max_examples = 0        # with tfds: read at most this many documents per split (0: all)
    c.data.val_split = ""          # with tfds: the held-out split ('': validation, else test)
    c.data.tokenizer = "char"      # 'char' | 'bpe' (byte-level BPE trained on the training split)
    c.data.vocab_size = 0          # with bpe: the vocabulary size to train
    c.data.cache_dir = ""          # prepared token arrays; default ~/.cache/lmjax/data

    c.model = ml_collections.ConfigDict()
    c.model.vocab_size = 0         # 0: taken from the tokenizer
    c.model.block_size = 128       # context length, also the training sequence length
    c.model.num_layers = 4
    c.model.num_heads = 4
    c.model.d_model = 128
    c.model.mlp_ratio = 4
    c.model.dropout = 0.0          # the default run sees each character about once: no need
    c.model.use_bias = True
    c.model.dtype = "float32"      # compute dtype; 'bfloat16' on accelerators
    c.model.param_dtype = "float32"
    c.model.attention = "auto"     # 'auto' | 'xla' | 'cudnn' (jax.nn.dot_product_attention)
    c.model.scan_layers = False    # nn.scan over the blocks: faster compiles for deep models

    c.train = ml_collections.ConfigDict()
    c.train.num_steps = 2450       # about 8 minutes on a 2-core CPU (docs/experiments.md)
    c.train.batch_size = 16        # global batch, in sequences
    c.train.grad_accum = 1         # micro-batches per step (batch_size must divide by it)
    c.train.log_every = 50
    c.train.eval_every = 500
    c.train.eval_windows = 128     # validation windows for the periodic evaluations
    c.train.final_eval_windows = 0 # at the end: 0 means the whole validation split

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "muon"          # 'muon' | 'adamw' | 'adam' | 'sgd' | 'rmsprop'
    c.optim.learning_rate = 4e-3   # peak; with muon, the rate of everything but weight matrices
    c.optim.schedule = "cosine"    # after warmup: 'cosine' | 'linear' | 'constant'
    c.optim.warmup_steps = 200
    c.optim.end_lr_ratio = 0.01
    c.optim.b1 = 0.9
    c.optim.b2 = 0.99
    c.optim.eps = 1e-8
    c.optim.momentum = 0.95        # muon, sgd and rmsprop
    c.optim.muon_learning_rate = 0.02  # muon: peak rate of the weight matrices (the rest: learning_rate)
    c.optim.rms_decay = 0.9        # rmsprop
    c.optim.weight_decay = 0.1     # decoupled; never on biases, norms or embeddings
    c.optim.clip_norm = 1.0        # global-norm clipping; 0 disables
    c.optim.l1 = 0.0
    c.optim.l2 = 0.0

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1               # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.host_cpu_devices = -1   # CPU-only hosts: one device per core (-1), or N; 0 leaves JAX's default

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

    c.sample = ml_collections.ConfigDict()
    c.sample.num_samples = 3
    c.sample.max_new_tokens = 300
    c.sample.prompt = "\n"
    c.sample.temperature = 0.8
    c.sample.top_k = 0             # 0: no top-k cut

    c.log = ml_collections.ConfigDict()
    c.log.tensorboard = True
    c.log.progress_bar = True

    if preset == "cpu":
        pass
    elif preset == "tiny":  # seconds, for tests and smoke runs
        c.model.update(num_layers=2, num_heads=2, d_model=32, block_size=32)
        c.train.update(num_steps=20, batch_size=8, log_every=5, eval_every=10, eval_windows=16,
                       final_eval_windows=64)
        c.optim.warmup_steps = 5
        c.checkpoint.every = 10
        c.sample.update(num_samples=1, max_new_tokens=20)
        c.log.progress_bar = False
    elif preset == "gpt2_124m":
        c.data.update(tokenizer="bpe", vocab_size=50304)
        c.model.update(num_layers=12, num_heads=12, d_model=768, block_size=1024,
                       dtype="bfloat16", scan_layers=True)
        c.train.update(num_steps=20000, batch_size=32, eval_every=1000)
        c.optim.update(name="adamw", learning_rate=6e-4, warmup_steps=700, b2=0.95,
                       end_lr_ratio=0.1)  # GPT-2's recipe, as nanoGPT trains it
        c.checkpoint.every = 2000
    else:
        raise ValueError(f"unknown preset {preset!r}: use cpu, tiny or gpt2_124m")
    return c
