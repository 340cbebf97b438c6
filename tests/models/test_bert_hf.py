"""The encoder against an independent reference: Hugging Face's BertForMaskedLM, same weights."""

import jax.numpy as jnp
import numpy as np
import pytest

from lmjax.models import bert

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


def hf_to_lmjax(sd: dict, num_layers: int, num_heads: int) -> dict:
    """Hugging Face BertForMaskedLM state dict -> lmjax.models.bert.MaskedLM params."""
    t = {k: v.detach().numpy() for k, v in sd.items()}
    d = t["bert.embeddings.word_embeddings.weight"].shape[1]
    hd = d // num_heads
    ln = lambda p: {"scale": t[p + ".weight"], "bias": t[p + ".bias"]}  # noqa: E731
    dense = lambda p: {"kernel": t[p + ".weight"].T, "bias": t[p + ".bias"]}  # noqa: E731

    def qkv(p):  # Linear (out, in) -> DenseGeneral (in, heads, head_dim)
        return {"kernel": t[p + ".weight"].T.reshape(d, num_heads, hd),
                "bias": t[p + ".bias"].reshape(num_heads, hd)}

    enc = {"word_embeddings": {"embedding": t["bert.embeddings.word_embeddings.weight"]},
           "position_embeddings": t["bert.embeddings.position_embeddings.weight"],
           "token_type_embeddings": {"embedding": t["bert.embeddings.token_type_embeddings.weight"]},
           "embeddings_ln": ln("bert.embeddings.LayerNorm")}
    for i in range(num_layers):
        p = f"bert.encoder.layer.{i}."
        enc[f"layer_{i}"] = {
            "attention": {**{n: qkv(p + "attention.self." + n) for n in ("query", "key", "value")},
                          "out": {"kernel": t[p + "attention.output.dense.weight"].T.reshape(
                              num_heads, hd, d), "bias": t[p + "attention.output.dense.bias"]}},
            "attention_ln": ln(p + "attention.output.LayerNorm"),
            "fc": dense(p + "intermediate.dense"), "proj": dense(p + "output.dense"),
            "mlp_ln": ln(p + "output.LayerNorm")}
    return {"bert": enc, "mlm_dense": dense("cls.predictions.transform.dense"),
            "mlm_ln": ln("cls.predictions.transform.LayerNorm"),
            "mlm_bias": t["cls.predictions.bias"]}


@pytest.mark.parametrize("init_range", [0.02, 0.3])
def test_masked_lm_logits_match_hugging_face(init_range, bert_config):
    hf_cfg = transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
        intermediate_size=64, max_position_embeddings=16, type_vocab_size=2,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=init_range)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(hf_cfg).eval()
    ids = np.array([[2, 11, 12, 13, 14, 3, 0, 0], [2, 21, 22, 23, 24, 25, 26, 3]], np.int64)
    with torch.no_grad():
        want = hf(input_ids=torch.tensor(ids), attention_mask=torch.tensor(ids != 0)).logits
    cfg = bert_config(vocab_size=60, block_size=16, num_layers=2, num_heads=4, d_model=32,
                      mlp_ratio=2, type_vocab_size=2, layer_norm_eps=hf_cfg.layer_norm_eps,
                      pad_id=0, pooling="cls", num_classes=0)
    params = hf_to_lmjax(hf.state_dict(), 2, 4)
    got = bert.MaskedLM(cfg).apply({"params": params}, jnp.asarray(ids, jnp.int32))
    real = ids != 0  # HF still computes outputs at padded positions; compare the real ones
    scale = np.abs(want.numpy()).max()
    np.testing.assert_allclose(np.asarray(got)[real], want.numpy()[real], atol=2e-5 * scale,
                               rtol=1e-4)
