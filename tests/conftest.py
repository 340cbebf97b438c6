"""Test-wide set-up: 8 simulated CPU devices, offline hubs, and small shared fixtures."""

import os

# Before JAX starts: 8 CPU devices stand in for a pod slice in the sharding tests.
os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TFDS_DISABLE_GCS", "1")

import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from lmjax import config as lmjax_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def load_config(preset: str = "tiny", config_file: str = "gpt.py"):
    return lmjax_config.load_config(f"{ROOT / 'configs' / config_file}:{preset}")


@pytest.fixture(scope="session", name="load_config")
def load_config_fixture():
    return load_config


@pytest.fixture(scope="session")
def run_module():
    """`run_module("report", *args)`: `python -m lmjax report ...` in a fresh interpreter at the
    repository root, on the CPU with JAX's own device count; returns the CompletedProcess
    (text stdout and stderr). A module name instead of a command runs that module:
    `run_module("lmjax.main", ...)`, or `run_module("lmjax", ...)` with the command among the
    arguments. Commands define absl flags at import, so the test process never imports them."""
    def run(command: str, *args, timeout: float = 300) -> subprocess.CompletedProcess:
        module = [command] if command.split(".")[0] == "lmjax" else ["lmjax", command]
        return subprocess.run([sys.executable, "-m", *module, *map(str, args)], cwd=ROOT,
                              capture_output=True, text=True, timeout=timeout,
                              env=dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS=""))

    return run


@pytest.fixture(scope="session")
def data_cache(tmp_path_factory) -> str:
    """One prepared-data cache for the whole session (preparing Shakespeare takes ~0.5 s)."""
    return str(tmp_path_factory.mktemp("data_cache"))


@pytest.fixture
def tiny_config(data_cache):
    c = load_config("tiny")
    c.data.cache_dir = data_cache
    c.log.tensorboard = False
    return c


@pytest.fixture
def fashion_config(fashion_dir):
    """configs/fashion_mnist.py:tiny on the `fashion_dir` images, 100 of them held out."""
    c = load_config("tiny", "fashion_mnist.py")
    c.data.update(dir=fashion_dir, val_size=100)
    return c


# Typed model configs for unit tests: small shapes, float32, no dropout; each fixture is a
# builder, `gpt_config(d_model=64, scan_layers=True)`, whose keyword arguments override fields.
# (Fixtures rather than a helper module: tests are imported with --import-mode=importlib, so
# nothing in tests/ is importable from a test module.)

@pytest.fixture(scope="session")
def gpt_config():
    from lmjax.models.gpt import GPTConfig

    def build(**overrides) -> GPTConfig:
        fields = dict(vocab_size=50, block_size=16, num_layers=2, num_heads=2, d_model=32,
                      mlp_ratio=4, dropout=0.0, use_bias=True, dtype="float32",
                      param_dtype="float32", attention="auto", scan_layers=False)
        return GPTConfig(**{**fields, **overrides})

    return build


@pytest.fixture(scope="session")
def bert_config():
    from lmjax.models.bert import BertConfig

    def build(**overrides) -> BertConfig:
        fields = dict(vocab_size=40, block_size=16, num_layers=2, num_heads=2, d_model=16,
                      mlp_ratio=2, dropout=0.0, use_bias=True, dtype="float32",
                      param_dtype="float32", attention="auto", type_vocab_size=2,
                      layer_norm_eps=1e-12, pad_id=0, pooling="cls", num_classes=3)
        return BertConfig(**{**fields, **overrides})

    return build


@pytest.fixture(scope="session")
def rnn_config():
    from lmjax.models.rnn import RNNConfig

    def build(**overrides) -> RNNConfig:
        fields = dict(name="lstm", vocab_size=11, block_size=8, d_model=6, num_layers=1,
                      dropout=0.0)
        return RNNConfig(**{**fields, **overrides})

    return build


@pytest.fixture(scope="session")
def decoder_config():
    """`decoder_config("gemma3", num_layers=6)`: a tiny float32 DecoderConfig of a family (its
    class's features: lmjax.models.decoder.FAMILY_FEATURES); keywords override fields."""
    from lmjax.models.decoder import FAMILY_FEATURES, family_config

    def build(family: str = "llama", **overrides):
        fields = dict(vocab_size=61, block_size=32, num_layers=2, num_heads=4, num_kv_heads=2,
                      head_dim=8, d_model=32, mlp_dim=48)
        pattern = FAMILY_FEATURES[family].get("layer_pattern", "")
        if "L" in overrides.get("layer_pattern", pattern):
            fields["sliding_window"] = 8
        return family_config(family, **{**fields, **overrides})

    return build


@pytest.fixture(scope="session")
def hf_decoder():
    """`hf_decoder("qwen3", directory, **config)`: a transformers model of a decoder family
    with random weights, built offline and saved to `directory` (save_pretrained). Tiny by
    default: hidden 64, 4 layers, 4 heads over 2 key/value heads of 16, 97 tokens, windows of
    16 where the family slides (Gemma 3: local and global layers alternate). Weights are drawn
    with a standard deviation of 1.6 / sqrt(hidden size) (0.2 at the tiny width, 10x the usual
    initialisation: logits of the same scale at any width) and norms and biases moved off
    their starting values, so every part shows in the logits. Keywords override the Hugging
    Face config (at real widths: tests/convert/test_decoders.py's real_widths)."""
    import torch
    import transformers as t
    from transformers.initialization import no_init_weights

    families = {
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, {}),
        "qwen2": (t.Qwen2Config, t.Qwen2ForCausalLM, {}),
        "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM, {}),
        "mistral": (t.MistralConfig, t.MistralForCausalLM, {"sliding_window": 16}),
        "gemma2": (t.Gemma2Config, t.Gemma2ForCausalLM, {"sliding_window": 16}),
        "gemma3": (t.Gemma3TextConfig, t.Gemma3ForCausalLM,
                   {"sliding_window": 16, "sliding_window_pattern": 2}),
    }

    def build(family: str, directory, **config):
        config_cls, model_cls, extra = families[family]
        torch.manual_seed(0)
        fields = dict(vocab_size=97, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16,
                      max_position_embeddings=512)
        fields["initializer_range"] = 1.6 / config.get("hidden_size", 64) ** 0.5
        with no_init_weights():  # torch's own initialisation, which transformers' replaces
            model = model_cls(config_cls(**{**fields, **extra, **config})).eval()
        model.init_weights()  # one pass of random numbers: 2.5x faster at real widths
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "norm" in name or name.endswith("bias"):
                    p.add_(0.2 * torch.randn_like(p))
        model.save_pretrained(directory)
        return model

    return build


CHAT_TEMPLATE = ("{{ bos_token }}{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}"
                 "{{ eos_token }}{% endfor %}{% if add_generation_prompt %}<|assistant|>"
                 "{% endif %}")


@pytest.fixture(scope="session")
def hf_tokenizer():
    """`hf_tokenizer(directory, style="bytelevel")`: a Hugging Face tokenizer trained offline on
    a few sentences and saved to `directory` as transformers does (tokenizer.json,
    tokenizer_config.json with bos/eos/pad and a chat template); returns transformers' own
    tokenizer. 'bytelevel' is Llama 3's / Qwen's kind (bos added by its post-processor),
    'metaspace' SentencePiece's as Mistral's and Gemma's convert (byte fallback, '▁' words).
    About 300 tokens: give the model at least `len(tokenizer)` embeddings."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    text = ["To be, or not to be, that is the question:", "Whether 'tis nobler in the mind",
            "to suffer the slings and arrows of outrageous fortune,", "Or to take arms\n\n",
            "Héllo wörld, naïve café — 東京 🙂", "ROMEO: But soft, what light through yonder"]

    def build(directory, style: str = "bytelevel"):
        if style == "bytelevel":
            bos, eos, pad = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
            tok = Tokenizer(models.BPE())
            tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = decoders.ByteLevel()
            trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[bos, eos, pad],
                                          initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
        else:
            bos, eos, pad = "<s>", "</s>", "<pad>"
            tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
            tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
            tok.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
            fallback = [f"<0x{i:02X}>" for i in range(256)]
            trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=[
                "<unk>", bos, eos, pad, *fallback])
        tok.train_from_iterator(text * 20, trainer)
        tok.post_processor = processors.TemplateProcessing(
            single=f"{bos} $A", pair=f"{bos} $A {bos} $B", special_tokens=[
                (bos, tok.token_to_id(bos))])
        hf = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=bos, eos_token=eos,
                                     pad_token=pad, unk_token="<unk>" if style != "bytelevel"
                                     else None)
        hf.chat_template = CHAT_TEMPLATE
        hf.save_pretrained(directory)
        return hf

    return build


def write_idx(path, array):
    """An IDX file as Fashion-MNIST ships them (gzip, big-endian header)."""
    import gzip

    import numpy as np
    array = np.asarray(array, np.uint8)
    magic = (0x08 << 8) | array.ndim
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.tobytes())


@pytest.fixture(scope="session")
def fashion_dir(tmp_path_factory) -> str:
    """Small Fashion-MNIST-shaped IDX files: 600 training and 200 test images of 28x28 in
    which each class is a square of its own brightness on noise, so a model can learn them."""
    import numpy as np
    d = tmp_path_factory.mktemp("fashion")
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 600), ("t10k", 200)):
        labels = rng.integers(0, 10, n)
        images = rng.integers(0, 40, (n, 28, 28))
        for i, y in enumerate(labels):
            images[i, 6:22, 6:22] = 60 + 19 * y
        write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", labels)
    return str(d)


@pytest.fixture(scope="session")
def save_untrained():
    """`save_untrained(cfg, workdir)`: a run directory with a freshly initialised checkpoint,
    what training writes without the cost of training (for tests whose figures do not depend
    on trained weights)."""
    from lmjax import rundir
    from lmjax.checkpoint import Checkpointer
    from lmjax.train.setup import setup

    def save(cfg, workdir: str) -> None:
        cfg.mesh.data = 1
        s = setup(cfg, log=lambda line: None)
        rundir.write(workdir, s.task.run_assets())
        with Checkpointer(rundir.checkpoint_dir(workdir)) as ckpt:
            ckpt.save(0, s.new_state(), cfg.to_dict(), force=True)
            ckpt.wait()

    return save
