"""lmjax BERT <-> Hugging Face BERT weights (safetensors), exact in both directions.

lmjax.models.bert is the original BERT arrangement (post-LayerNorm, exact GELU, learned
positions, segment embeddings, tied MLM decoder, tanh pooler), so the masked-LM model maps onto
BertForMaskedLM and the classifier with 'cls' pooling onto BertForSequenceClassification, one
tensor to one tensor. HF's Linear weights are (out, in): they are transposed, and the
query/key/value/output matrices split into or joined from heads.
"""

from __future__ import annotations

import numpy as np

from lmjax.convert.gpt2 import ConversionError

REQUIRED = {"hidden_act": "gelu", "position_embedding_type": "absolute", "is_decoder": False,
            "add_cross_attention": False, "tie_word_embeddings": True}
HEADS = {"mlm": "BertForMaskedLM", "classifier": "BertForSequenceClassification"}


def model_settings(hf: dict) -> dict:
    """The lmjax `model` fields for a HF BERT config (refuses what would not match)."""
    problems = [f"{k}={hf.get(k, v)!r} (lmjax needs {v!r})" for k, v in REQUIRED.items()
                if hf.get(k, v) != v]
    if hf.get("model_type", "bert") != "bert":
        problems.append(f"model_type={hf.get('model_type')!r} (only 'bert')")
    if hf["intermediate_size"] % hf["hidden_size"]:
        problems.append(f"intermediate_size={hf['intermediate_size']} is not a multiple of "
                        f"hidden_size={hf['hidden_size']}")
    if problems:
        raise ConversionError("this Hugging Face model is not a BERT lmjax can reproduce: "
                              + "; ".join(problems))
    return {"vocab_size": hf["vocab_size"], "block_size": hf["max_position_embeddings"],
            "num_layers": hf["num_hidden_layers"], "num_heads": hf["num_attention_heads"],
            "d_model": hf["hidden_size"], "mlp_ratio": hf["intermediate_size"] // hf["hidden_size"],
            "type_vocab_size": hf["type_vocab_size"], "layer_norm_eps": hf["layer_norm_eps"],
            "pad_id": hf.get("pad_token_id") or 0, "use_bias": True}


def head_of(params: dict) -> str:
    if "mlm_bias" in params:
        return "mlm"
    if "classifier" in params:
        return "classifier"
    raise ConversionError("these parameters are neither a BERT masked-LM nor a classifier.")


def normalise(tensors: dict) -> dict:
    """HF BERT tensors under today's names: BertModel's bare 'embeddings.*' / 'encoder.*' /
    'pooler.*' under 'bert.', the original release's LayerNorm 'gamma'/'beta' as
    'weight'/'bias', and the next-sentence head of BertForPreTraining (bert-base-uncased as
    downloaded) dropped: nothing in lmjax uses it."""
    out = {}
    for k, v in tensors.items():
        if k.startswith(("embeddings.", "encoder.", "pooler.")):
            k = "bert." + k
        if k.startswith("cls.seq_relationship.") or k.endswith("position_ids"):
            continue
        if ".LayerNorm." in k:
            k = k.replace(".gamma", ".weight").replace(".beta", ".bias")
        out[k] = v
    return out


def head_of_hf(tensors: dict) -> str:
    """'classifier' (BertForSequenceClassification), 'mlm' (BertForMaskedLM, BertForPreTraining)
    or 'encoder' (BertModel) for normalised HF tensors."""
    if "classifier.weight" in tensors:
        return "classifier"
    return "mlm" if "cls.predictions.bias" in tensors else "encoder"


def params_from_hf(tensors: dict, model) -> dict:
    """lmjax MaskedLM or Classifier parameters (float32) from HF BERT tensors; which one
    follows from the tensors (cls.predictions.* or classifier.*). A BertModel gives the
    encoder ('bert') and its pooler only."""
    t = {k: np.asarray(v, np.float32) for k, v in normalise(tensors).items()
         if k != "cls.predictions.decoder.weight"}
    d, h = model.d_model, model.num_heads
    ln = lambda p: {"scale": t.pop(p + ".weight"), "bias": t.pop(p + ".bias")}  # noqa: E731
    dense = lambda p: {"kernel": t.pop(p + ".weight").T, "bias": t.pop(p + ".bias")}  # noqa

    def heads_in(p):  # (d, d) Linear -> (d, heads, head_dim)
        return {"kernel": t.pop(p + ".weight").T.reshape(d, h, d // h),
                "bias": t.pop(p + ".bias").reshape(h, d // h)}

    e = "bert.embeddings."
    enc = {"word_embeddings": {"embedding": t.pop(e + "word_embeddings.weight")},
           "position_embeddings": t.pop(e + "position_embeddings.weight")[:model.block_size],
           "embeddings_ln": ln(e + "LayerNorm")}
    if model.type_vocab_size:
        enc["token_type_embeddings"] = {"embedding": t.pop(e + "token_type_embeddings.weight")}
    for i in range(model.num_layers):
        p = f"bert.encoder.layer.{i}."
        enc[f"layer_{i}"] = {
            "attention": {**{n: heads_in(p + "attention.self." + n)
                             for n in ("query", "key", "value")},
                          "out": {"kernel": t.pop(p + "attention.output.dense.weight").T.reshape(
                              h, d // h, d), "bias": t.pop(p + "attention.output.dense.bias")}},
            "attention_ln": ln(p + "attention.output.LayerNorm"),
            "fc": dense(p + "intermediate.dense"), "proj": dense(p + "output.dense"),
            "mlp_ln": ln(p + "output.LayerNorm")}
    if "cls.predictions.bias" in t:
        out = {"bert": enc, "mlm_dense": dense("cls.predictions.transform.dense"),
               "mlm_ln": ln("cls.predictions.transform.LayerNorm"),
               "mlm_bias": t.pop("cls.predictions.bias")}
        t.pop("cls.predictions.decoder.bias", None)  # the same tensor as cls.predictions.bias
    elif "classifier.weight" in t:
        out = {"bert": enc, "pooler": dense("bert.pooler.dense"), "classifier": dense("classifier")}
    elif "bert.pooler.dense.weight" in t:  # BertModel
        out = {"bert": enc, "pooler": dense("bert.pooler.dense")}
    else:
        raise ConversionError("the checkpoint has no MLM head (cls.predictions.*), classifier "
                              "(classifier.*) or pooler: save BertForMaskedLM, "
                              "BertForSequenceClassification or BertModel.")
    t = {k: v for k, v in t.items() if not k.startswith("bert.pooler.")}  # MLM: pooler unused
    if t:
        raise ConversionError(f"unexpected tensors in the checkpoint: {sorted(t)[:5]}")
    return out


def hf_from_params(params: dict, model) -> dict:
    """HF BertForMaskedLM / BertForSequenceClassification tensors from lmjax parameters."""
    d, ff = model.d_model, model.mlp_ratio * model.d_model
    a = lambda x: np.asarray(x, np.float32)  # noqa: E731
    enc, out = params["bert"], {}

    def ln(name, tree):
        out[name + ".weight"], out[name + ".bias"] = a(tree["scale"]), a(tree["bias"])

    def dense(name, tree, n_out):  # kernel (inputs..., outputs...) -> Linear (out, in)
        out[name + ".weight"] = a(tree["kernel"]).reshape(-1, n_out).T.copy()
        out[name + ".bias"] = a(tree["bias"]).reshape(n_out) if "bias" in tree else np.zeros(
            n_out, np.float32)  # use_bias=False: zero biases compute the same

    e = "bert.embeddings."
    out[e + "word_embeddings.weight"] = a(enc["word_embeddings"]["embedding"])
    out[e + "position_embeddings.weight"] = a(enc["position_embeddings"])
    if "token_type_embeddings" in enc:
        out[e + "token_type_embeddings.weight"] = a(enc["token_type_embeddings"]["embedding"])
    ln(e + "LayerNorm", enc["embeddings_ln"])
    for i in range(model.num_layers):
        b, p = enc[f"layer_{i}"], f"bert.encoder.layer.{i}."
        for n in ("query", "key", "value"):
            dense(p + "attention.self." + n, b["attention"][n], d)
        dense(p + "attention.output.dense", b["attention"]["out"], d)
        ln(p + "attention.output.LayerNorm", b["attention_ln"])
        dense(p + "intermediate.dense", b["fc"], ff)
        dense(p + "output.dense", b["proj"], d)
        ln(p + "output.LayerNorm", b["mlp_ln"])
    if head_of(params) == "mlm":
        dense("cls.predictions.transform.dense", params["mlm_dense"], d)
        ln("cls.predictions.transform.LayerNorm", params["mlm_ln"])
        out["cls.predictions.bias"] = a(params["mlm_bias"])
    else:
        dense("bert.pooler.dense", params["pooler"], d)
        dense("classifier", params["classifier"], a(params["classifier"]["kernel"]).shape[-1])
    return out


def hf_config(model, head: str, class_names=None) -> dict:
    config = {"model_type": "bert", "architectures": [HEADS[head]],
              "vocab_size": model.vocab_size, "max_position_embeddings": model.block_size,
              "num_hidden_layers": model.num_layers, "num_attention_heads": model.num_heads,
              "hidden_size": model.d_model, "intermediate_size": model.mlp_ratio * model.d_model,
              "type_vocab_size": model.type_vocab_size or 1,
              "layer_norm_eps": model.layer_norm_eps, "pad_token_id": model.pad_id,
              "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0, **REQUIRED}
    if head == "classifier":
        names = list(class_names or [f"LABEL_{i}" for i in range(model.num_classes)])
        config.update(num_labels=len(names), id2label=dict(enumerate(names)),
                      label2id={n: i for i, n in enumerate(names)})
    return config


def write_hf(out: str, params: dict, model, tokenizer=None, class_names=None) -> None:
    """A directory BertForMaskedLM / BertForSequenceClassification.from_pretrained loads."""
    import json
    import os

    from safetensors.numpy import save_file

    head = head_of(params)
    if head == "classifier" and model.pooling != "cls":
        raise ConversionError(f"model.pooling={model.pooling!r}: Hugging Face's "
                              "BertForSequenceClassification pools the [CLS] position only.")
    tensors = hf_from_params(params, model)
    if not model.type_vocab_size:  # HF always adds segment embeddings: a zero one
        tensors["bert.embeddings.token_type_embeddings.weight"] = np.zeros(
            (1, model.d_model), np.float32)
    os.makedirs(out, exist_ok=True)
    save_file(tensors, os.path.join(out, "model.safetensors"), metadata={"format": "pt"})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(hf_config(model, head, class_names), f, indent=1)
    if tokenizer is not None and getattr(tokenizer, "kind", "") == "wordpiece":
        # tokenizer.json + tokenizer_config.json + vocab.txt: BertTokenizer(Fast) loads them
        tokenizer.save_hf(out, model.block_size)
