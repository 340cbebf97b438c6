"""lmjax BERT <-> Hugging Face BERT (masked LM and sequence classification), checked against
transformers' PyTorch models with tiny random weights built locally."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lmjax.convert import bert as convert  # noqa: E402
from lmjax.convert.gpt2 import ConversionError, read_hf  # noqa: E402
from lmjax.models import bert  # noqa: E402

IDS = np.array([[2, 11, 12, 13, 14, 3, 0, 0], [2, 21, 22, 23, 24, 25, 26, 3]], np.int64)
REAL = IDS != 0  # HF computes outputs at padding too; compare the real positions


def _hf(kind, **kw):
    config = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16, type_vocab_size=2, num_labels=3,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.3, **kw)
    torch.manual_seed(0)
    return getattr(transformers, kind)(config).eval()


def _hf_logits(model):
    with torch.no_grad():
        return model(input_ids=torch.tensor(IDS),
                     attention_mask=torch.tensor(REAL)).logits.numpy()


@pytest.fixture(scope="module")
def cfg_of(bert_config):
    """The BertConfig for a converted model's settings (no dropout, float32)."""
    return lambda settings, num_classes=0, pooling="cls": bert_config(
        **settings, pooling=pooling, num_classes=num_classes)


def _ours(cls, cfg, params):
    return np.asarray(cls(cfg).apply({"params": params}, jnp.asarray(IDS, jnp.int32)))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["BertForMaskedLM", "BertForSequenceClassification"])
def test_hf_to_lmjax_and_back(tmp_path, kind, cfg_of):
    hf = _hf(kind)
    hf.save_pretrained(tmp_path / "hf")
    config, tensors, _ = read_hf(str(tmp_path / "hf"))
    classifier = kind == "BertForSequenceClassification"
    cfg = cfg_of(convert.model_settings(config), num_classes=3 if classifier else 0)
    params = convert.params_from_hf(tensors, cfg)
    model = bert.Classifier if classifier else bert.MaskedLM
    want, got = _hf_logits(hf), _ours(model, cfg, params)
    assert np.abs(want).max() > 0.5  # far from zero (the classifier reads a tanh)
    if classifier:
        assert np.abs(got - want).max() <= 1e-4
    else:
        assert np.abs(got[REAL] - want[REAL]).max() <= 1e-4
    # ... and back: the written directory loads into transformers and gives the same logits.
    convert.write_hf(str(tmp_path / "back"), params, cfg, class_names=["a", "b", "c"])
    again = getattr(transformers, kind).from_pretrained(str(tmp_path / "back")).eval()
    np.testing.assert_allclose(_hf_logits(again), want, atol=1e-5)
    if classifier:
        assert again.config.id2label == {0: "a", 1: "b", 2: "c"}


@pytest.mark.slow
def test_lmjax_classifier_to_hf_logits_match(tmp_path, cfg_of):
    hf_settings = convert.model_settings(_hf("BertForMaskedLM").config.to_dict())
    cfg = cfg_of(hf_settings, num_classes=4)
    params = nn.meta.unbox(bert.Classifier(cfg).init(jax.random.PRNGKey(0),
                                                     jnp.zeros((1, 8), jnp.int32)))["params"]
    params = jax.tree.map(lambda x: x * 5 if x.ndim > 1 else x + 0.1, params)
    convert.write_hf(str(tmp_path), params, cfg)
    hf = transformers.BertForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    ours = _ours(bert.Classifier, cfg, params)
    assert np.abs(ours).max() > 0.3 and np.abs(ours[0] - ours[1]).max() > 1e-2
    assert np.abs(_hf_logits(hf) - ours).max() <= 1e-4
    with pytest.raises(ConversionError, match="pools the \\[CLS\\] position only"):
        convert.write_hf(str(tmp_path / "mean"), params, cfg_of(hf_settings, 4, pooling="mean"))


def test_models_lmjax_cannot_reproduce_are_refused():
    config = _hf("BertForMaskedLM", hidden_act="relu").config.to_dict()
    with pytest.raises(ConversionError, match="hidden_act='relu'"):
        convert.model_settings(config)


def test_bert_for_pretraining_with_original_names_and_bert_model(cfg_of):
    """bert-base-uncased as downloaded: BertForPreTraining (an NSP head lmjax drops) with the
    original LayerNorm gamma/beta names; and a bare BertModel (encoder + pooler)."""
    hf = _hf("BertForPreTraining")
    tensors = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace(
        "LayerNorm.bias", "LayerNorm.beta"): v.numpy() for k, v in hf.state_dict().items()}
    assert any(k.endswith(".gamma") for k in tensors) and "cls.seq_relationship.weight" in tensors
    assert convert.head_of_hf(convert.normalise(tensors)) == "mlm"
    cfg = cfg_of(convert.model_settings(hf.config.to_dict()))
    params = convert.params_from_hf(tensors, cfg)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(REAL))
    got = _ours(bert.MaskedLM, cfg, params)
    assert np.abs(got[REAL] - want.prediction_logits.numpy()[REAL]).max() <= 1e-4

    base = _hf("BertModel")
    tensors = {k: v.numpy() for k, v in base.state_dict().items()}  # 'embeddings.*', no 'bert.'
    assert convert.head_of_hf(convert.normalise(tensors)) == "encoder"
    params = convert.params_from_hf(tensors, cfg)
    assert set(params) == {"bert", "pooler"}
    hidden = np.asarray(bert.Encoder(cfg).apply({"params": params["bert"]},
                                                jnp.asarray(IDS, jnp.int32)))
    with torch.no_grad():
        out = base(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(REAL))
    assert np.abs(hidden[REAL] - out.last_hidden_state.numpy()[REAL]).max() <= 1e-4


def test_from_hf_bert_refuses_a_config_of_another_task(tmp_path, load_config):
    from lmjax.convert.hf import from_hf

    _hf("BertForSequenceClassification").save_pretrained(tmp_path / "hf")
    with pytest.raises(ConversionError, match="converts to a 'text_classify' run, but --config "
                                              "is a 'lm' config: pass --config=configs/classify"):
        from_hf(str(tmp_path / "hf"), str(tmp_path / "run"), load_config("tiny"))
    with pytest.raises(ConversionError, match="holds no tokenizer.*--tokenizer=<dir or"):
        from_hf(str(tmp_path / "hf"), str(tmp_path / "run"),
                load_config("tiny", "classify.py"))


@pytest.mark.slow
def test_from_hf_bert_model_is_a_masked_lm_run_with_its_encoder(tmp_path, load_config):
    """A bare BertModel (+ its vocab.txt) becomes a masked-LM run: the encoder exactly, the MLM
    head freshly initialised; the run exports back to a BertForMaskedLM transformers loads,
    whose encoder is the original's."""
    from lmjax.convert.hf import from_hf, to_hf

    hf = _hf("BertModel")
    hf.save_pretrained(tmp_path / "hf")
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(55)]
    (tmp_path / "hf" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    message = from_hf(str(tmp_path / "hf"), str(tmp_path / "run"), load_config("tiny", "bert.py"),
                      log=lambda s: None)
    assert "--config.init_from=" in message
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["task"] == "mlm" and run["config"]["hf_source"] == str(tmp_path / "hf")
    to_hf(str(tmp_path / "run"), str(tmp_path / "back"))
    back = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "back")).eval()
    assert transformers.BertTokenizerFast.from_pretrained(str(tmp_path / "back")).mask_token_id == 4
    with torch.no_grad():
        args = dict(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(REAL))
        want, got = hf(**args).last_hidden_state.numpy(), back.bert(**args)[0].numpy()
        logits = back(**args).logits.numpy()
    assert np.abs(got[REAL] - want[REAL]).max() <= 1e-5
    assert np.isfinite(logits).all() and np.abs(logits).max() > 0  # a fresh MLM head is there


@pytest.mark.slow
def test_continue_masked_lm_pretraining_of_a_converted_hf_bert(tmp_path, load_config):
    """Domain-adaptive pretraining: a converted BertForMaskedLM whose vocabulary has
    bert-base's order ([PAD] 0, [unused*], then [UNK] [CLS] [SEP] [MASK]) continues masked-LM
    training on a local corpus with its own tokenizer, shape and weights, and exports back."""
    from lmjax.convert.hf import from_hf, to_hf
    from lmjax.tasks import make_task
    from lmjax.train.loop import train_and_evaluate

    letters = list("abcdefghijklmnopqrstuvwxyz")
    vocab = (["[PAD]"] + [f"[unused{i}]" for i in range(9)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
             + letters + ["##" + c for c in letters] + list(".,;:!?'-"))
    hf_dir = tmp_path / "hf"
    config = transformers.BertConfig(
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=64, initializer_range=0.2)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(config).eval()
    hf.save_pretrained(hf_dir)
    (hf_dir / "vocab.txt").write_text("\n".join(vocab) + "\n")
    from_hf(str(hf_dir), str(tmp_path / "converted"), load_config("tiny", "bert.py"),
            log=lambda s: None)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for i in range(4):
        (corpus / f"doc{i}.txt").write_text(
            " ".join(["now is the winter of our discontent made glorious summer"] * 20) + "\n")

    cfg = load_config("hf_continue", "bert.py")  # the shape fields at 0: the converted run's
    cfg.init_from = str(tmp_path / "converted")
    cfg.data.update(name="files", files=str(corpus / "*.txt"), cache_dir=str(tmp_path / "cache"))
    cfg.model.block_size = 32
    cfg.train.update(num_steps=2, eval_every=2, log_every=1, batch_size=8)
    cfg.optim.update(learning_rate=1e-9, warmup_steps=1)  # the weights stay the converted ones
    cfg.log.update(tensorboard=False, progress_bar=False)
    cfg.mesh.data = 1
    task = make_task(cfg, log=lambda s: None)
    assert task.tokenizer.special_ids == (0, 10, 11, 12, 13) and task.model.cfg.num_layers == 2
    targets = task.train_batch(0, 0, 1)["mlm_targets"]
    assert targets.max() > 13 and not np.isin(targets[targets > 0], (10, 11, 12, 13)).any()
    summary = train_and_evaluate(cfg, str(tmp_path / "continued"))
    assert np.isfinite(summary["val_loss"]) and 0 <= summary["val_masked_accuracy"] <= 1

    to_hf(str(tmp_path / "continued"), str(tmp_path / "back"))
    back = transformers.BertForMaskedLM.from_pretrained(str(tmp_path / "back")).eval()
    ids = torch.tensor([[11, 27, 28, 29, 13, 30, 12]])
    with torch.no_grad():
        want, got = hf(input_ids=ids).logits.numpy(), back(input_ids=ids).logits.numpy()
    assert np.abs(got - want).max() < 1e-4  # started from the converted weights exactly
    # A data.tokenizer_file of another vocabulary is refused, naming the fix.
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "vocab.txt").write_text("\n".join(vocab[::-1]) + "\n")
    cfg.data.tokenizer_file = str(tmp_path / "other")
    with pytest.raises(ValueError, match="leave data.tokenizer_file empty"):
        make_task(cfg, log=lambda s: None)
