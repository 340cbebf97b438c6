"""BERT end to end on tiny configs: masked-LM pretraining, then fine-tuning, LoRA and k-fold."""

import json
import os

import flax.linen as nn
import jax
import numpy as np
import optax
import pytest

from lmjax.tasks import make_task
from lmjax.train.crossval import fit
from lmjax.train.loop import train_and_evaluate
from lmjax.train.restore import load_run

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:'VariableState' was removed:DeprecationWarning")]


def _tiny(load_config, data_cache, config_file):
    c = load_config("tiny", config_file)
    c.data.cache_dir = data_cache
    c.log.tensorboard = False
    c.mesh.data = 2  # 2 of the 8 test devices: data-parallel like the 2-core default
    return c


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory, data_cache, load_config):
    """One tiny masked-LM run shared by the fine-tuning tests."""
    workdir = str(tmp_path_factory.mktemp("bert"))
    cfg = _tiny(load_config, data_cache, "bert.py")
    cfg.train.num_steps = 40
    cfg.optim.learning_rate = 5e-3
    summary = train_and_evaluate(cfg, workdir)
    return workdir, summary


def test_mlm_pretraining_learns_and_reports_masked_metrics(pretrained):
    workdir, summary = pretrained
    assert {"val_loss", "val_masked_accuracy", "val_perplexity"} <= set(summary)
    # 512 WordPiece tokens: uniform guessing would be ln(512) = 6.24 nats and 0.2% accurate.
    assert summary["val_loss"] < 5.9 and summary["val_masked_accuracy"] > 0.01
    np.testing.assert_allclose(summary["val_perplexity"], np.exp(summary["val_loss"]), rtol=1e-6)


def test_mlm_loss_counts_masked_positions_only(load_config, data_cache):
    task = make_task(_tiny(load_config, data_cache, "bert.py"), log=lambda s: None)
    batch = task.train_batch(3)
    again = task.train_batch(3)
    for k in batch:  # a pure function of (seed, step)
        np.testing.assert_array_equal(batch[k], again[k])
    half = task.train_batch(3, process_index=1, process_count=2)
    np.testing.assert_array_equal(half["inputs"], batch["inputs"][4:])
    params = nn.meta.unbox(task.init_variables(jax.random.PRNGKey(0)))["params"]
    batch["mlm_weights"][::2, -2:] = 0  # unused slots, as a short passage leaves them
    loss, (aux, _) = task.loss(params, {}, batch, jax.random.PRNGKey(1))
    # The same number by hand: cross-entropy at the selected positions, unused slots dropped.
    logits = task.model.apply({"params": params}, batch["inputs"], batch["mlm_positions"],
                              deterministic=False, rngs={"dropout": jax.random.PRNGKey(1)})
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, batch["mlm_targets"])
    w = batch["mlm_weights"]
    np.testing.assert_allclose(loss, (np.asarray(ce) * w).sum() / w.sum(), rtol=1e-5)
    # No target is ever [PAD] or another special token, and the real rows' padding stays.
    assert (batch["mlm_targets"][w > 0] >= 5).all()


def test_finetuning_restores_exactly_the_pretrained_encoder(pretrained, load_config, data_cache):
    workdir, _ = pretrained
    cfg = _tiny(load_config, data_cache, "classify.py")
    cfg.init_from = workdir
    task = make_task(cfg, log=lambda s: None)
    _, _, source = load_run(workdir)
    fresh = nn.meta.unbox(task.init_variables(jax.random.PRNGKey(0)))["params"]
    loaded = task.load_pretrained(fresh, jax.device_get(source.params))
    jax.tree.map(np.testing.assert_array_equal, loaded["bert"],
                 jax.device_get(source.params["bert"]))
    for head in ("pooler", "classifier"):  # fresh
        jax.tree.map(np.testing.assert_array_equal, loaded[head], fresh[head])
    # The tokenizer is the pretrained run's.
    assert task.tokenizer.vocab_size == source.params["bert"]["word_embeddings"][
        "embedding"].shape[0]


def test_finetuning_run_reports_the_classification_metrics(pretrained, load_config, data_cache,
                                                           tmp_path):
    workdir, _ = pretrained
    cfg = _tiny(load_config, data_cache, "classify.py")
    cfg.init_from = workdir
    cfg.train.update(num_steps=10, eval_every=5, final_eval_examples=64)
    summary = train_and_evaluate(cfg, str(tmp_path))
    for k in ("val_accuracy", "val_f1_macro", "val_f1_micro", "val_precision_macro",
              "val_recall_macro", "val_roc_auc", "val_log_loss", "val_loss", "best_step"):
        assert k in summary, k
    assert 0 <= summary["val_accuracy"] <= 1 and 0 <= summary["val_roc_auc"] <= 1
    assert os.path.isdir(tmp_path / "best")


def test_lora_trains_adapters_only_and_merges(pretrained, load_config, data_cache, tmp_path):
    workdir, _ = pretrained
    cfg = _tiny(load_config, data_cache, "classify.py")
    cfg.init_from = workdir
    cfg.lora.rank = 2
    cfg.lora.targets = "query,value,fc"
    cfg.train.early_stopping_metric = ""
    cfg.train.update(num_steps=10, eval_every=100, final_eval_examples=32)
    train_and_evaluate(cfg, str(tmp_path))
    _, task, state = load_run(str(tmp_path))
    _, _, source = load_run(workdir)
    tuned, base = jax.device_get(state.params), jax.device_get(source.params)
    # Every base weight of the encoder is exactly the pretrained one; adapters moved.
    flat = jax.tree_util.tree_leaves_with_path(tuned["bert"])
    moved = 0
    for path, x in flat:
        keys = [p.key for p in path]
        if keys[-1].endswith(("_lora_a", "_lora_b")):
            moved += keys[-1].endswith("_lora_b") and bool(np.any(x != 0))
            continue
        node = base["bert"]
        for k in keys:
            node = node[k]
        np.testing.assert_array_equal(x, node)
    assert moved == 2 * 3  # two layers x three targets
    model, merged = task.plain_model(tuned)
    inputs = task.examples("val", np.arange(8))["inputs"]
    np.testing.assert_allclose(model.apply({"params": merged}, inputs),
                               task._logits(tuned, inputs, True), rtol=1e-5, atol=1e-6)


def test_kfold_from_scratch_reports_mean_and_std(load_config, data_cache, tmp_path):
    cfg = _tiny(load_config, data_cache, "classify.py")
    cfg.data.num_folds = 2
    cfg.train.update(num_steps=3, eval_every=100, final_eval_examples=64)
    cfg.optim.warmup_steps = 1
    summary = fit(cfg, str(tmp_path))
    assert "val_f1_macro" in summary and "val_f1_macro_std" in summary
    folds = json.loads((tmp_path / "kfold.json").read_text())["folds"]
    assert len(folds) == 2 and folds[0]["val_accuracy"] != folds[1]["val_accuracy"]


@pytest.mark.parametrize("fold", [-1, 1])
def test_kfold_of_a_finetuned_encoder_is_refused(pretrained, load_config, data_cache, tmp_path,
                                                 fold):
    # Pretraining read every work but the default split's validation works: other folds'
    # validation passages are not held out from the encoder.
    cfg = _tiny(load_config, data_cache, "classify.py")
    cfg.init_from, cfg.data.num_folds, cfg.data.fold = pretrained[0], 2, fold
    with pytest.raises(ValueError, match=r"data.num_folds=2 with init_from=.*from scratch.*"
                                         r"data.num_folds=0"):
        fit(cfg, str(tmp_path))
    assert not list(tmp_path.rglob("checkpoints/*"))  # refused before any training


def test_init_from_a_mismatched_encoder_is_a_readable_error(pretrained, load_config, data_cache):
    workdir, _ = pretrained
    cfg = _tiny(load_config, data_cache, "classify.py")
    cfg.init_from = workdir
    cfg.model.d_model = 64
    with pytest.raises(ValueError, match="model.d_model: pretrained 32, here 64"):
        make_task(cfg, log=lambda s: None)
    bad = _tiny(load_config, data_cache, "bert.py")
    bad.data.tokenizer = "char"
    with pytest.raises(ValueError, match="wordpiece"):
        make_task(bad, log=lambda s: None)
