"""Sequence classification with a BERT encoder: fine-tuned from a masked-LM run or a converted
Hugging Face BERT (lmjax convert from_hf), or from scratch.

With `init_from` the tokenizer and the encoder come from the pretrained run's directory (its
tokenizer.json and checkpoint; its corpus is not read again). Model shape fields left at 0
are the pretrained run's; a shorter `model.block_size` keeps the first positions. The pooler
comes along when the pretrained run has one (a converted BertForSequenceClassification), and
its classifier head too when its class names are this data's; otherwise they start fresh.
Without `init_from`, `data.tokenizer_file` names a fixed tokenizer (a Hugging Face directory),
or a WordPiece vocabulary is trained on the training side of the data. With the lora switch
(lmjax/tasks/adapters.py) the encoder is frozen and low-rank adapters train with the head.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from lmjax import rundir
from lmjax.data import sources, text_classification
from lmjax.data.batches import spread
from lmjax.data.prepare import prepare
from lmjax.data.tokenizers import WordPieceTokenizer
from lmjax.models import bert
from lmjax.parallel.mesh import local_rows
from lmjax.tasks.base import CLASSES, TEXT_CLASSES, Task, epoch_indices, padded_batches
from lmjax.tasks.classification import (class_weights, classification_loss, classification_metrics,
                                         classification_outputs)
from lmjax.tasks.encoder import (check_shape_given, check_tokenizer, encoder_params,
                                 fixed_tokenizer, pretrained_model)


def check_folds(cfg: ml_collections.ConfigDict, pre: rundir.Assets) -> None:
    """Refuses cross-validating the genres from an encoder that read every fold's works."""
    read_shakespeare = (pre.config.get("data", {}).get("name", "shakespeare") == "shakespeare"
                        and not pre.config.get("hf_source"))
    shares = sources.lookup(cfg.data.name, "labelled_text")[1].corpus == "shakespeare"
    if shares and cfg.data.num_folds > 1 and read_shakespeare:
        # Pretraining held out only the default split's works; every other fold's validation
        # works were in its training text, which would inflate the fold's scores.
        raise ValueError(
            f"data.num_folds={cfg.data.num_folds} with init_from={cfg.init_from!r}: the "
            "masked-LM run pretrained on every work except the default split's validation "
            "works, so each fold's validation works were already read by the encoder. "
            "Cross-validate from scratch (no init_from), or fine-tune on the default split "
            "(data.num_folds=0), which pretraining held out.")


def _tokenizer_data(cfg: ml_collections.ConfigDict, name: str) -> ml_collections.ConfigDict:
    """Without init_from: the `data` section of the corpus `name` whose cached WordPiece
    vocabulary the data shares: for the genres, Shakespeare's training works (the same corpus,
    hence the same vocabulary, as configs/bert.py pretrains on); for a TFDS set, its own train
    split."""
    return ml_collections.ConfigDict(dict(
        name=name, tokenizer="wordpiece", vocab_size=cfg.data.vocab_size,
        cache_dir=cfg.data.cache_dir, text_key=cfg.data.text_key,
        max_examples=cfg.data.max_examples, val_split=cfg.data.val_split,
        files="", val_fraction=0.1))


class TextClassificationTask(Task):
    capabilities = frozenset({CLASSES, TEXT_CLASSES})
    head_modules = ("pooler", "classifier")  # start fresh on a pretrained encoder

    @classmethod
    def check(cls, cfg: ml_collections.ConfigDict) -> None:
        sources.check(cfg.data, "labelled_text")

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        self.pretrained_class_names = None
        if assets is None:
            check_shape_given(cfg)
            pre, section = (pretrained_model(cfg, ("mlm", "text_classify"), log)
                            if cfg.init_from else (None, cfg.model))
            if pre is not None:
                check_folds(cfg, pre)
            model_cfg = bert.BertConfig.from_section(section)  # checked before the data
            self.seq_len = self.tokens_per_example = model_cfg.block_size
            self.tokenizer = fixed_tokenizer(cfg, pre)
            if self.tokenizer is None:
                self.tokenizer = self._train_tokenizer()
            if pre is not None:
                self.pretrained_class_names = pre.class_names
            elif self.tokenizer.pad_id != model_cfg.pad_id:  # the encoder masks [PAD] by id
                model_cfg = model_cfg.replace(pad_id=self.tokenizer.pad_id)
            self.class_names = self.data.class_names
            model_cfg = model_cfg.with_vocab(self.tokenizer.vocab_size).replace(
                num_classes=len(self.class_names))
            if self.tokenizer.pad_id != model_cfg.pad_id:
                raise ValueError(f"the tokenizer's [PAD] is id {self.tokenizer.pad_id}, the "
                                 f"pretrained encoder's {model_cfg.pad_id}: use the tokenizer "
                                 "the encoder was trained with.")
        else:
            self.tokenizer, self.class_names = assets.tokenizer, list(assets.class_names)
            model_cfg = bert.BertConfig(**assets.model)
            self.seq_len = self.tokens_per_example = model_cfg.block_size
        tok = self.tokenizer
        check_tokenizer(tok)
        self.num_classes = len(self.class_names)
        self.weights = None if assets else class_weights(
            cfg.train.class_weights, self.data.train_labels, self.num_classes)
        self.model = bert.Classifier(model_cfg)
        self.matrix_dims = bert.matrix_dims

    def _train_tokenizer(self):
        """A WordPiece vocabulary from the training side: through the cache of the corpus the
        source shares one with (lmjax/data/sources.py), or trained on its texts directly (a
        local table: small)."""
        _, source = sources.lookup(self.cfg.data.name, "labelled_text")
        if not source.corpus:
            return WordPieceTokenizer.train(text_classification.training_texts(self.cfg.data),
                                            self.cfg.data.vocab_size)
        corpus = self.cfg.data.name if source.corpus == "*" else source.corpus
        return prepare(_tokenizer_data(self.cfg, corpus), log=self.log).tokenizer

    @functools.cached_property
    def data(self) -> text_classification.TextClassificationData:
        return text_classification.load(self.cfg.data, self.tokenizer, self.seq_len)

    def run_assets(self) -> rundir.Assets:
        return self._assets(self.model.cfg, class_names=list(self.class_names))

    def describe(self) -> str:
        line = self.data.description
        if self.weights is not None:
            line += f"; class weights {', '.join(f'{w:.2f}' for w in self.weights)}"
        return line

    def init_variables(self, rng: jax.Array):
        return self.model.init(rng, jnp.zeros((1, self.seq_len), jnp.int32))

    def _logits(self, params, inputs, deterministic, rng=None):
        # qwix recognises a kernel only among jax.Arrays (tracers under jit): applied eagerly to
        # NumPy parameters (a restored checkpoint), a LoRA model would silently skip its adapters.
        params = jax.tree.map(jnp.asarray, params)
        return self.model.apply({"params": params}, inputs, deterministic=deterministic,
                                rngs=None if rng is None else {"dropout": rng}
                                ).astype(jnp.float32)

    def loss(self, params, model_state, batch, rng):
        logits = self._logits(params, batch["inputs"], False, rng)
        loss, accuracy = classification_loss(logits, batch["labels"], self.weights)
        return loss, ({"accuracy": accuracy}, model_state)

    def eval_outputs(self, params, model_state, batch):
        logits = self._logits(params, batch["inputs"], True)
        return classification_outputs(logits, batch["labels"], batch["weights"])

    def summarize(self, sums: dict, examples: dict) -> dict:
        return classification_metrics(sums, examples, self.class_names)

    def example_arrays(self, split: str = "train") -> dict:
        if split == "train":
            return {"inputs": self.data.train_inputs, "labels": self.data.train_labels}
        return {"inputs": self.data.val_inputs, "labels": self.data.val_labels}

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["labels"])

    def gather(self, arrays: dict, ids) -> dict:
        return {"inputs": arrays["inputs"][ids], "labels": arrays["labels"][ids]}

    def labels(self, split: str = "train") -> np.ndarray:
        return np.asarray(self.example_arrays(split)["labels"])

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        ids = epoch_indices(self.cfg.seed, step, self.cfg.train.batch_size, self.num_examples())
        return self.examples("train", local_rows(ids, process_index, process_count))

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        arrays = self.example_arrays(split)
        ids = spread(self.num_examples(split), max_examples)
        return padded_batches(len(ids), batch_size, lambda i: self.gather(arrays, ids[i]))

    def load_pretrained(self, params, pretrained):
        """The pretrained encoder ('bert') exactly (a shorter context: its first positions);
        the pooler if the pretrained run has one, the classifier head if its classes are these;
        everything else (adapters, the rest of the head) stays fresh."""
        bert_params = encoder_params(pretrained, self.seq_len)
        out = {**params, "bert": self._copy(params["bert"], bert_params, "bert")}
        parts = ["the encoder"]
        if "pooler" in pretrained:
            out["pooler"] = self._copy(params["pooler"], pretrained["pooler"], "pooler")
            parts.append("the pooler")
        if "classifier" in pretrained:
            if list(self.pretrained_class_names or []) == list(self.class_names):
                out["classifier"] = self._copy(params["classifier"], pretrained["classifier"],
                                               "classifier")
                parts.append("the classifier head")
            else:
                self.log(f"init_from: its classifier head is for classes "
                         f"{self.pretrained_class_names}, the data's are {self.class_names}: "
                         "the head starts fresh.")
        self.log(f"init_from: {', '.join(parts)} from {self.cfg.init_from}.")
        return out

    @staticmethod
    def _copy(params, source, name: str):
        def take(path, mine):
            keys = [k.key for k in path]
            node = source
            for k in keys:
                if not isinstance(node, dict) or k not in node:
                    raise ValueError(f"init_from: the pretrained {name} has no "
                                     f"{'/'.join(map(str, keys))}.")
                node = node[k]
            if node.shape != mine.shape:
                raise ValueError(f"init_from: {name}/{'/'.join(map(str, keys))} is "
                                 f"{node.shape} there and {mine.shape} here.")
            return node.astype(mine.dtype)

        return jax.tree_util.tree_map_with_path(take, params)
