"""The decoder families (Llama, Qwen, Mistral, Gemma) on lmjax's paths: pretraining from
configs/llama.py, and a Hugging Face checkpoint converted, generated from (equal to
transformers' greedy `generate`), fine-tuned with LoRA on q/k/v/o/gate/up/down and exported
back (equal logits in transformers). The block itself is tests/models/test_decoder.py; the
conversion's per-family parity tests/convert/test_decoders.py."""

import json

import numpy as np
import pytest

from lmjax.models.decoder import FAMILIES, Decoder
from lmjax.tasks import make_task

QUIET = dict(log=lambda *a, **k: None)


@pytest.mark.parametrize("family", FAMILIES)
def test_configs_llama_builds_each_family_from_its_name(load_config, data_cache, family):
    """model.name picks the family; the fields left out are the family's own features."""
    cfg = load_config("tiny", "llama.py")
    cfg.model.name = family
    if family in ("mistral", "gemma2", "gemma3"):  # windowed layers: Mistral's all of them
        cfg.model.sliding_window = 8
    if family == "mistral":
        with cfg.unlocked():
            cfg.model.layer_pattern = "L"
    cfg.data.cache_dir = data_cache
    task = make_task(cfg, **QUIET)
    assert isinstance(task.model, Decoder) and task.model.cfg.name == family
    if family.startswith("gemma"):
        assert task.model.cfg.embed_scale and task.model.cfg.post_norms
    if family == "qwen2":
        assert task.model.cfg.qkv_bias


@pytest.mark.slow
def test_a_tiny_llama_pretrains_and_resumes(load_config, data_cache, tmp_path):
    from lmjax.train.loop import train_and_evaluate

    cfg = load_config("tiny", "llama.py")
    cfg.data.cache_dir = data_cache
    cfg.log.tensorboard = False
    cfg.train.num_steps = 10
    first = train_and_evaluate(cfg, str(tmp_path / "run"))
    cfg.train.num_steps = 20
    done = train_and_evaluate(cfg, str(tmp_path / "run"))
    vocab = make_task(cfg, **QUIET).model_config.vocab_size
    assert done["val_loss"] < first["val_loss"] < np.log(vocab)


@pytest.mark.slow
def test_a_hugging_face_qwen3_converts_generates_finetunes_and_exports(
        tmp_path, hf_decoder, hf_tokenizer, run_module):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    hf_dir, run, tuned, out = (str(tmp_path / d) for d in ("hf", "run", "tuned", "out"))
    tok = hf_tokenizer(hf_dir, "bytelevel")
    model = hf_decoder("qwen3", hf_dir, vocab_size=len(tok), bos_token_id=tok.bos_token_id,
                       eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)

    r = run_module("convert", "from_hf", f"--hf={hf_dir}", f"--workdir={run}")
    assert r.returncode == 0, r.stderr[-2000:]
    assert f"configs/llama.py:finetune --config.init_from={run}" in r.stdout

    # Greedy generation from a text prompt: the model sees bos first, as with transformers.
    prompt = "To be, or not to be"
    r = run_module("generate", f"--workdir={run}", f"--prompt={prompt}", "--temperature=0",
                   "--max_new_tokens=16")
    assert r.returncode == 0, r.stderr[-2000:]
    ids = tok(prompt, return_tensors="pt")["input_ids"]
    assert ids[0, 0] == tok.bos_token_id
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=16, do_sample=False,
                              pad_token_id=tok.pad_token_id)[0, ids.shape[1]:].tolist()
    if tok.eos_token_id in want:  # lmjax stops at eos and does not print it
        want = want[:want.index(tok.eos_token_id)]
    assert tok.decode(want) in r.stdout

    # Fine-tune with LoRA on every projection, then export: transformers computes the same.
    docs = tmp_path / "docs"
    docs.mkdir()
    for i in range(8):
        (docs / f"{i}.txt").write_text("To be, or not to be, that is the question. " * 6)
    r = run_module("train", "--config=configs/llama.py:finetune+lora", f"--workdir={tuned}",
                   f"--config.init_from={run}", "--config.data.name=files",
                   f"--config.data.files={docs / '*.txt'}", "--config.data.val_fraction=0.25",
                   "--config.model.block_size=32", "--config.train.num_steps=6",
                   "--config.train.batch_size=4", "--config.train.eval_every=6",
                   "--config.optim.learning_rate=1e-2", "--config.optim.warmup_steps=1",
                   "--config.lora.targets=q,k,v,o,gate,up,down", "--config.log.tensorboard=False",
                   "--config.sample.num_samples=0", timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    r = run_module("convert", "to_hf", f"--workdir={tuned}", f"--out={out}")
    assert r.returncode == 0, r.stderr[-2000:]
    again = transformers.AutoModelForCausalLM.from_pretrained(out).eval()
    assert type(again).__name__ == "Qwen3ForCausalLM"
    from lmjax.infer.load import load
    loaded = load(tuned)
    tokens = np.asarray(tok("that is the question", return_tensors="np")["input_ids"])
    ours = np.asarray(loaded.model.apply({"params": loaded.params}, tokens))
    with torch.no_grad():
        theirs = again(torch.as_tensor(tokens)).logits.numpy()
        before = model(torch.as_tensor(tokens)).logits.numpy()
    assert np.abs(ours - theirs).max() <= 1e-4
    assert np.abs(before - theirs).max() > 1e-3  # the fine-tuning changed the function
    assert json.load(open(f"{out}/tokenizer_config.json"))["chat_template"] == tok.chat_template
