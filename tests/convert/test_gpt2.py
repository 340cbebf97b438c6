"""lmjax GPT <-> Hugging Face GPT-2, checked against transformers' own PyTorch model (tiny,
random weights built locally: no download)."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmjax.convert import gpt2  # noqa: E402
from lmjax.models.gpt import GPT, stack_layers  # noqa: E402

VOCAB, POSITIONS = 300, 32


def _hf_model(**kw):
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=VOCAB, n_positions=POSITIONS, n_embd=32, n_layer=2, n_head=4,
        initializer_range=0.2, **kw)  # larger weights than GPT-2's 0.02: logits of size ~10
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():  # GPT-2 starts with zero biases and unit norms: make them count
        for name, p in model.named_parameters():
            if name.endswith("bias") or "ln_" in name:
                p.add_(0.1 * torch.randn_like(p))
    return model


def _hf_logits(model, tokens):
    with torch.no_grad():
        return model(torch.as_tensor(np.asarray(tokens), dtype=torch.long)).logits.numpy()


@pytest.fixture(scope="module")
def lmjax_cfg(gpt_config):
    """The lmjax GPTConfig of `_hf_model`'s shape; keyword arguments change fields."""
    return lambda **kw: gpt_config(**{**dict(vocab_size=VOCAB, block_size=POSITIONS,
                                             num_layers=2, num_heads=4, d_model=32), **kw})


TOKENS = np.random.default_rng(0).integers(0, VOCAB, (3, POSITIONS))


@pytest.mark.parametrize("scan_layers", [False, True])
def test_hf_to_lmjax_logits_match(tmp_path, scan_layers, lmjax_cfg):
    hf = _hf_model()
    hf.save_pretrained(tmp_path)  # safetensors
    config, tensors, _ = gpt2.read_hf(str(tmp_path))
    cfg = lmjax_cfg(scan_layers=scan_layers)
    assert gpt2.model_settings(config) == {k: getattr(cfg, k)
                                           for k in gpt2.model_settings(config)}
    params = gpt2.params_from_hf(tensors, cfg)
    if scan_layers:
        params = stack_layers(params, cfg.num_layers)
    ours = GPT(cfg).apply({"params": params}, jnp.asarray(TOKENS))
    theirs = _hf_logits(hf, TOKENS)
    assert np.abs(theirs).max() > 3  # a real test: logits far from zero
    assert np.abs(np.asarray(ours) - theirs).max() <= 1e-4


@pytest.mark.slow
def test_greedy_generation_matches_hf_generate(tmp_path, lmjax_cfg):
    from lmjax.models.generator import Generator, Request

    hf = _hf_model()
    hf.save_pretrained(tmp_path)
    config, tensors, _ = gpt2.read_hf(str(tmp_path))
    cfg = lmjax_cfg()
    tok = _Codepoints()
    gen = Generator(GPT(cfg), gpt2.params_from_hf(tensors, cfg), tok)
    ours = gen.generate([Request("to be:", max_new_tokens=20)])[0].tokens
    prompt = torch.as_tensor(tok.encode("to be:")[None], dtype=torch.long)
    with torch.no_grad():
        out = hf.generate(prompt, max_new_tokens=20, do_sample=False, pad_token_id=0)
    assert ours == out[0, prompt.shape[1]:].tolist()


class _Codepoints:
    """Text <-> ids by code point: enough to drive both models with the same ids."""

    def encode(self, text):
        return np.asarray([ord(c) % VOCAB for c in text], np.int32)

    def decode(self, ids):
        return "".join(chr(0x100 + int(i)) for i in ids)


@pytest.mark.slow
@pytest.mark.parametrize("use_bias", [True, False])
def test_lmjax_to_hf_logits_match(tmp_path, use_bias, lmjax_cfg):
    cfg = lmjax_cfg(use_bias=use_bias)
    params = nn.meta.unbox(GPT(cfg).init(jax.random.PRNGKey(0), jnp.zeros((1, 4), jnp.int32)))
    params = jax.tree.map(lambda x: x * 10 if x.ndim > 1 else x + 0.1, params["params"])
    gpt2.write_hf(str(tmp_path), params, cfg)
    hf = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path)).eval()
    ours = np.asarray(GPT(cfg).apply({"params": params}, jnp.asarray(TOKENS)))
    assert np.abs(ours).max() > 3
    assert np.abs(_hf_logits(hf, TOKENS) - ours).max() <= 1e-4


def test_models_lmjax_cannot_reproduce_are_refused(tmp_path):
    _hf_model(activation_function="relu").save_pretrained(tmp_path)
    config, _, _ = gpt2.read_hf(str(tmp_path))
    with pytest.raises(gpt2.ConversionError, match="activation_function='relu'"):
        gpt2.model_settings(config)
    with pytest.raises(gpt2.ConversionError, match="from_hf imports GPT-2"):
        gpt2.model_settings(transformers.BertConfig().to_dict())
    with pytest.raises(gpt2.ConversionError, match="not a local directory"):
        gpt2.read_hf(str(tmp_path / "missing"))


def _gpt2_style_tokenizer(text: str, path) -> None:
    """A byte-level BPE tokenizer.json with GPT-2's <|endoftext|>, trained on `text`."""
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator([text], vocab_size=VOCAB, special_tokens=["<|endoftext|>"])
    tok._tokenizer.save(str(path))


@pytest.mark.slow
def test_from_hf_without_a_tokenizer_says_which_file_and_flag(tmp_path, run_module):
    hf_dir = tmp_path / "hf"
    _hf_model().save_pretrained(hf_dir)  # weights and config.json only: no tokenizer.json
    r = run_module("convert", "from_hf", f"--hf={hf_dir}", f"--workdir={tmp_path / 'run'}")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{hf_dir} has no tokenizer.json" in r.stderr
    assert "--tokenizer=<dir or tokenizer.json>" in r.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_from_hf_writes_a_run_that_generates_and_fine_tunes(tmp_path, tiny_config):
    """The fine-tuning path: HF weights (a bare save_pretrained) + a tokenizer from a directory
    of its own -> an lmjax run at step 0 -> train."""
    from tokenizers import Tokenizer

    from lmjax.convert.hf import from_hf
    from lmjax.infer.load import load
    from lmjax.train.loop import train_and_evaluate

    text = tmp_path / "corpus.txt"
    text.write_text("\n\n".join(f"Line {i}: to be, or not to be, that is the question."
                                for i in range(400)))
    hf_dir, tok_dir = tmp_path / "hf", tmp_path / "tokenizer"
    _hf_model().save_pretrained(hf_dir)  # a bare save_pretrained: no tokenizer.json
    tok_dir.mkdir()  # the tokenizer from a directory of its own (--tokenizer=<dir>)
    _gpt2_style_tokenizer(text.read_text(), tok_dir / "tokenizer.json")
    tok = Tokenizer.from_file(str(tok_dir / "tokenizer.json"))

    cfg = tiny_config
    cfg.data.update(name="files", files=str(text))
    cfg.train.update(num_steps=4, eval_every=2, final_eval_examples=8)
    cfg.optim.warmup_steps = 2
    cfg.checkpoint.every = 2
    cfg.sample.num_samples = 0
    workdir = tmp_path / "run"
    finetune = from_hf(str(hf_dir), str(workdir), cfg, tokenizer=str(tok_dir), log=lambda s: None)
    assert (workdir / "hf" / "tokenizer.json").read_bytes() == (
        tok_dir / "tokenizer.json").read_bytes()  # the run keeps the tokenizer it was given

    loaded = load(str(workdir))
    assert loaded.tokenizer.vocab_size == tok.get_vocab_size()
    ids = loaded.tokenizer.encode("to be, or not to be")[None]
    np.testing.assert_allclose(loaded.model.apply({"params": loaded.params}, ids),
                               _hf_logits(transformers.GPT2LMHeadModel.from_pretrained(
                                   str(hf_dir)).eval(), ids), atol=1e-4)

    from lmjax.config import load_config
    resumed = load_config(finetune)
    summary = train_and_evaluate(resumed, str(workdir))
    assert summary["step"] == 4 and np.isfinite(summary["val_loss"])
