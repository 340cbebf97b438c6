"""Starting a BERT task from a pretrained encoder run (config.init_from): a masked-LM run of
configs/bert.py or a Hugging Face BERT converted by `lmjax convert from_hf`.

Both BERT tasks use these checks: fine-tuning a classifier (tasks/text_classification.py) and
continuing masked-LM pretraining (tasks/mlm.py). The encoder's shape and tokenizer are the
pretrained run's, never retrained.
"""

from __future__ import annotations

from collections.abc import Sequence

import ml_collections

from lmjax import rundir
from lmjax.data.tokenizers import load_tokenizer_file
from lmjax.tasks.assets import read_assets

# Encoder fields that must agree with the pretrained run's.
ENCODER_FIELDS = ("vocab_size", "block_size", "num_layers", "num_heads", "d_model", "mlp_ratio",
                  "use_bias", "type_vocab_size", "param_dtype")
# ... of which these, left at 0 in the config, are taken from it (configs/classify.py:hf_sentiment).
SHAPE_FIELDS = ("block_size", "num_layers", "num_heads", "d_model", "mlp_ratio")


def check_tokenizer(tokenizer) -> None:
    if getattr(tokenizer, "kind", None) != "wordpiece":
        raise ValueError("BERT needs [CLS]/[SEP]/[PAD]/[MASK]: set --config.data.tokenizer="
                         f"wordpiece (got {getattr(tokenizer, 'kind', tokenizer)!r}).")


def check_shape_given(cfg: ml_collections.ConfigDict) -> None:
    """A shape field at 0 means the pretrained run's, so it needs init_from."""
    zero = [f for f in SHAPE_FIELDS if cfg.model[f] == 0]
    if zero and not cfg.init_from:
        raise ValueError(f"model.{zero[0]}=0 means the pretrained run's: set "
                         "--config.init_from=<a masked-LM run or a converted Hugging Face "
                         "BERT> (lmjax convert from_hf), or give the shape.")


def pretrained_model(cfg: ml_collections.ConfigDict, tasks: Sequence[str],
                     log=print) -> tuple[rundir.Assets, dict]:
    """(the pretrained run's assets, this config's model section resolved against its encoder),
    after checking that the run is one of `tasks` and its encoder has this config's shape."""
    pre = read_assets(cfg.init_from, log=log)
    if pre.task not in tasks:
        raise ValueError(f"init_from={cfg.init_from!r} is a {pre.task!r} run; this task starts "
                         f"from a {' or '.join(map(repr, tasks))} run: a masked-LM run "
                         "(configs/bert.py) or a converted Hugging Face BERT (lmjax "
                         "convert from_hf).")
    model, section = pre.model, cfg.model.to_dict()
    for f in SHAPE_FIELDS:
        if section[f] == 0:
            section[f] = model[f]
    diffs = [f"model.{f}: pretrained {model[f]!r}, here {section[f]!r}"
             for f in ENCODER_FIELDS if f not in ("vocab_size", "block_size")
             and model[f] != section[f]]
    if section["block_size"] > model["block_size"]:
        diffs.append(f"model.block_size: pretrained {model['block_size']} positions, here "
                     f"{section['block_size']} (at most as many)")
    if diffs:
        raise ValueError(f"The encoder here differs from the pretrained one in {cfg.init_from}: "
                         f"{'; '.join(diffs)}. Use the same model settings (0 for a shape field "
                         "takes the pretrained run's).")
    # Properties of the pretrained weights, not choices of the fine-tuning.
    section.update(vocab_size=model["vocab_size"], layer_norm_eps=model["layer_norm_eps"],
                   pad_id=model["pad_id"])
    return pre, section


def encoder_params(pretrained: dict, seq_len: int) -> dict:
    """The pretrained encoder's parameters ('bert'); a shorter context keeps its first positions."""
    if "bert" not in pretrained:
        raise ValueError("init_from: the pretrained parameters have no BERT encoder ('bert').")
    out = dict(pretrained["bert"])
    out["position_embeddings"] = out["position_embeddings"][:seq_len]
    return out


def fixed_tokenizer(cfg: ml_collections.ConfigDict, pre: rundir.Assets | None):
    """The pretrained run's tokenizer, or `data.tokenizer_file`'s (a Hugging Face directory or
    tokenizer.json); with both, they must be the same vocabulary. None: train one."""
    path = cfg.data.get("tokenizer_file", "")
    given = load_tokenizer_file(path) if path else None
    if pre is None:
        return given
    if given is not None and _vocab(given) != _vocab(pre.tokenizer):
        raise ValueError(f"data.tokenizer_file={path!r} is not the vocabulary of "
                         f"init_from={cfg.init_from!r}: leave data.tokenizer_file empty (the "
                         "pretrained run's tokenizer is used) or give its own.")
    return pre.tokenizer


def _vocab(tokenizer) -> dict:
    inner = getattr(tokenizer, "_tok", None)
    return inner.get_vocab() if inner is not None else {"chars": getattr(tokenizer, "chars", "")}
