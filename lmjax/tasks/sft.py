"""Supervised fine-tuning of a GPT or a decoder family's model on prompt/response pairs: the loss on
response tokens only.

Usually started from a pretrained language-model run (`init_from`), whose tokenizer it uses
(or `data.tokenizer_file`). Examples are rendered with `sft.template` (lmjax/data/sft.py) and
either packed several to a row, with segment ids so that they cannot attend to each other
(`sft.packing`, the default), or padded one to a row. The validation loss and perplexity are
over response tokens only; at the end of training the model answers up to
`sft.eval_questions` validation questions greedily, and exact match / token F1 (SQuAD's
definitions, lmjax/eval/qa.py) are reported. With the lora switch (`configs/sft.py:cpu+lora`,
lmjax/tasks/adapters.py) only adapters train.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from lmjax import rundir
from lmjax.config import require
from lmjax.data import chat
from lmjax.data import sft as sft_data
from lmjax.data import sources
from lmjax.data.tokenizers import load_tokenizer_file
from lmjax.eval import metrics, qa
from lmjax.models.generator import Generator, Request
from lmjax.parallel.mesh import local_rows
from lmjax.tasks.assets import read_assets
from lmjax.tasks.base import ANSWERS, DECODES, Task, epoch_indices, padded_batches
from lmjax.tasks.lm import PRETRAINED, chunked_losses, model_family, model_section

# The GPT tasks whose runs fine-tuning may start from (init_from).
DECODERS = ("lm", "sft", "dpo", "grpo")
# Model fields that must agree with the pretrained run's (the rest only change how the same
# weights are computed).
SHAPE_FIELDS = ("block_size", "num_layers", "num_heads", "d_model", "mlp_ratio", "use_bias",
                "scan_layers", "param_dtype")


def _tokenizer(cfg: ml_collections.ConfigDict, log):
    """data.tokenizer_file, else the pretrained run's own tokenizer; checks that the model has
    the pretrained run's shape."""
    pre = None
    if cfg.init_from:
        pre = read_assets(cfg.init_from, log=log)
        if pre.task not in DECODERS:
            raise ValueError(f"init_from={cfg.init_from!r} is a {pre.task!r} run; task="
                             f"{cfg.task} starts from a GPT run (task {', '.join(DECODERS)}).")
        diffs = [f"model.{f}: pretrained {pre.model.get(f)!r}, here {cfg.model[f]!r}"
                 for f in SHAPE_FIELDS if f in cfg.model and pre.model.get(f) != cfg.model[f]
                 and cfg.model.get("name") != PRETRAINED]  # else model_section checks
        if diffs:
            raise ValueError(f"The model here differs from the pretrained one in "
                             f"{cfg.init_from}: {'; '.join(diffs)}. Use the same settings "
                             "(--config.model.<field>=...).")
    if cfg.data.tokenizer_file:
        return load_tokenizer_file(cfg.data.tokenizer_file)
    if pre is None or pre.tokenizer is None:
        raise ValueError(f"task={cfg.task} needs a tokenizer: set init_from to a pretrained "
                         "run (its tokenizer.json is used) or data.tokenizer_file.")
    return pre.tokenizer


class SFTTask(Task):
    capabilities = frozenset({DECODES, ANSWERS})

    @classmethod
    def check(cls, c: ml_collections.ConfigDict) -> None:
        s = c.sft
        require(s.template.count("{prompt}") == 1 and s.template.count("{response}") == 1 and
                s.template.endswith("{response}"),
                f"sft.template={s.template!r}: it must hold '{{prompt}}' once and end with "
                "'{response}', e.g. 'Question: {prompt}\\nAnswer: {response}'.")
        require(isinstance(s.stop, (tuple, list)) and all(isinstance(x, str) and x for x in s.stop),
                f"sft.stop={s.stop!r}: a tuple of non-empty stop strings, e.g. ('\\n\\n',).")
        require(s.eval_questions >= 0, f"sft.eval_questions={s.eval_questions}: must be >= 0.")
        require(s.get("pack_length", 0) >= 0, f"sft.pack_length={s.get('pack_length', 0)}: "
                "packed row length, >= 0 (0: model.block_size).")
        require(s.max_answer_tokens > 0,
                f"sft.max_answer_tokens={s.max_answer_tokens}: must be positive.")
        require(s.max_answer_tokens < c.model.block_size,
                f"sft.max_answer_tokens={s.max_answer_tokens}: must be below model.block_size="
                f"{c.model.block_size} (the question needs room).")
        sources.check(c.data, "records")

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        super().__init__(cfg, assets, log)
        s = cfg.sft
        sft_data.check_template(s.template)
        if assets is None:
            section, _ = model_section(cfg, log, DECODERS)  # model.name='init_from': its model
            family = model_family(section)
            model_cfg = family.config.from_section(section)  # checked before the data
            self.tokenizer = _tokenizer(cfg, log)
            model_cfg = model_cfg.with_vocab(self.tokenizer.vocab_size)
        else:
            family = model_family(assets.model)
            self.tokenizer = assets.tokenizer
            model_cfg = family.config(**assets.model)
        self.model = family.module(model_cfg)
        self.matrix_dims, self.head_logits = family.matrix_dims, family.output_layer(model_cfg)
        self.seq_len = model_cfg.block_size
        self.loss_chunk = cfg.train.get("loss_chunk", 0)
        if self.loss_chunk and self.seq_len % self.loss_chunk:
            raise ValueError(f"train.loss_chunk={self.loss_chunk}: use a divisor of "
                             f"model.block_size={self.seq_len}, or 0 (no chunking).")

    # -- data ------------------------------------------------------------------------------

    @functools.cached_property
    def data(self) -> dict:
        """Encoded examples and the training rows (packed or padded), built once."""
        s, cfg = self.cfg.sft, self.cfg
        train_recs, val_recs = sft_data.load_records(cfg.data, cfg.seed)
        out, dropped = {}, {}
        for split, recs in (("train", train_recs), ("val", val_recs)):
            exs, refs = [], []
            for i, r in enumerate(recs):
                # chat records: the model's own chat template if it has one (data/chat.py)
                parts = sft_data.pieces(r, s.template, s.end, f"{split} record {i}",
                                        hf=chat.hf_chat(self.tokenizer))
                e = sft_data.encode(self.tokenizer, parts, self.seq_len + 1)
                if e is not None:
                    exs.append(e)
                    refs.append(r)
            dropped[split] = len(recs) - len(exs)
            if not exs:
                raise sft_data.SFTDataError(f"no {split} example fits model.block_size="
                                            f"{self.seq_len} tokens.")
            out[split], out[f"{split}_records"] = exs, refs
        lengths = [len(e.tokens) for e in out["train"]]
        longest = max(lengths) - 1  # positions of the longest example
        if s.packing:
            # Shorter rows waste less attention on masked pairs (docs/finetune.md), but every
            # example must fit one.
            pack_length = s.get("pack_length", 0) or self.seq_len  # absent in older runs
            self.row_length = min(self.seq_len, max(pack_length, longest))
            order = np.random.default_rng([cfg.seed, 1]).permutation(len(lengths))
            groups = [[out["train"][i] for i in g]
                      for g in sft_data.pack_groups(lengths, self.row_length, order)]
            out["rows"] = sft_data.pack(groups, self.row_length)
        else:  # padded to the longest example, not to the context
            self.row_length = longest
            out["rows"] = sft_data.rows(out["train"], longest)
        out["dropped"] = dropped
        return out

    @property
    def tokens_per_example(self) -> int:
        """Positions per training row, as throughput counts them (padding included)."""
        return self.row_length if "data" in self.__dict__ else self.seq_len

    def describe(self) -> str:
        d = self.data
        rows = d["rows"]
        real = int((rows["segment_ids"] > 0).sum())
        line = (f"{len(d['train']):,} training and {len(d['val']):,} validation examples "
                f"({d['dropped']['train']} + {d['dropped']['val']} longer than the context "
                f"dropped); {len(rows['inputs']):,} rows of {self.row_length} "
                f"({'packed' if self.cfg.sft.packing else 'padded'}, "
                f"{real / rows['inputs'].size:.0%} real tokens); loss on "
                f"{'responses only' if self.cfg.sft.response_only else 'whole sequences'}")
        return line

    def run_assets(self) -> rundir.Assets:
        return self._assets(self.model.cfg)

    def dummy_batch(self, batch_size: int = 1) -> dict[str, np.ndarray]:
        x = np.zeros((batch_size, self.seq_len), np.int32)
        return {"inputs": x, "targets": x, "loss_weights": x.astype(np.float32),
                "segment_ids": x}

    def init_variables(self, rng: jax.Array):
        return self.model.init(rng, self.dummy_batch()["inputs"])

    # An example is a training row (packed rows hold several question/answer pairs).
    def example_arrays(self, split: str = "train") -> dict:
        if split != "train":
            return sft_data.rows(self.data["val"], self.seq_len)
        return self.data["rows"]

    def num_examples(self, split: str = "train") -> int:
        return len(self.example_arrays(split)["inputs"])

    def gather(self, arrays: dict, ids) -> dict:
        return {k: v[ids] for k, v in arrays.items()}

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1):
        ids = epoch_indices(self.cfg.seed, step, self.cfg.train.batch_size, self.num_examples())
        return self.examples("train", local_rows(ids, process_index, process_count))

    def eval_batches(self, batch_size: int, max_examples: int = 0, split: str = "val"):
        """Validation examples one per row, padded (the same every time)."""
        exs = self.data["val"]
        n = len(exs) if not max_examples else min(max_examples, len(exs))
        return padded_batches(n, batch_size,
                              lambda idx: sft_data.rows([exs[i] for i in idx], self.seq_len))

    # -- model -----------------------------------------------------------------------------

    def token_losses(self, params, batch, deterministic: bool = True, rng=None) -> jax.Array:
        """Per-position cross-entropy (float32), (batch, length)."""
        # qwix finds kernels only among jax.Arrays: NumPy parameters (a restored checkpoint)
        # would silently skip a LoRA model's adapters.
        params = jax.tree.map(jnp.asarray, params)
        kwargs = dict(deterministic=deterministic, segment_ids=batch.get("segment_ids"),
                      rngs=None if rng is None else {"dropout": rng})
        if self.loss_chunk:
            hidden = self.model.apply({"params": params}, batch["inputs"], hidden=True, **kwargs)
            return chunked_losses(hidden, batch["targets"], lambda h: self.head_logits(
                params, h), self.loss_chunk)
        logits = self.model.apply({"params": params}, batch["inputs"], **kwargs)
        return optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32),
                                                               batch["targets"])

    def weights(self, batch) -> jax.Array:
        """Which positions the loss counts: response tokens (sft.response_only), or every real
        token (prompt included, padding never)."""
        if self.cfg.sft.response_only:
            return batch["loss_weights"]
        return (batch["segment_ids"] > 0).astype(jnp.float32)

    def loss(self, params, model_state, batch, rng):
        losses = self.token_losses(params, batch, False, rng)
        w = self.weights(batch)
        return (losses * w).sum() / jnp.maximum(w.sum(), 1.0), ({}, model_state)

    def eval_outputs(self, params, model_state, batch):
        """Response tokens only, whatever the training loss: the perplexity of answers."""
        losses = self.token_losses(params, batch)
        w = batch["loss_weights"] * batch["weights"][:, None]  # 0 for padding rows
        return {"sums": {"loss": (losses * w).sum(), "count": w.sum()}, "examples": {}}

    def summarize(self, sums: dict, examples: dict) -> dict:
        out = super().summarize(sums, examples)
        out["perplexity"] = metrics.perplexity(out["loss"])
        return out

    def load_pretrained(self, params, pretrained):
        """Every pretrained parameter, by path."""
        def take(path, mine):
            node = pretrained
            path = [k for k in path if isinstance(k, jax.tree_util.DictKey)]
            for k in path:
                key = k.key
                if not isinstance(node, dict) or key not in node:
                    raise ValueError(f"init_from: the pretrained model has no "
                                     f"{'/'.join(str(p.key) for p in path)}; "
                                     "is model.scan_layers the same as there?")
                node = node[key]
            if node.shape != mine.shape:
                raise ValueError(f"init_from: {'/'.join(str(p.key) for p in path)} is "
                                 f"{node.shape} there and {mine.shape} here (a different "
                                 "tokenizer or model shape?).")
            return node.astype(mine.dtype)

        return jax.tree_util.tree_map_with_path(take, params)

    # -- end of training: answers ----------------------------------------------------------

    def answer(self, params, questions: list[str]) -> list[str]:
        """Greedy answers to `questions` with the run's template and stop strings."""
        s = self.cfg.sft
        # A plain model: with LoRA, the switch (tasks/adapters.py) hands over its merged weights.
        model, params = self.model, jax.tree.map(jnp.asarray, jax.device_get(params))
        gen = Generator(model, params, self.tokenizer)
        room = self.seq_len - s.max_answer_tokens  # each prompt's last tokens that leave room
        requests = [Request(p, s.max_answer_tokens, stop=tuple(s.stop),
                            prompt_ids=tuple(gen.encode(p)[-room:].tolist()))
                    for p in (sft_data.format_prompt(s.template, q) for q in questions)]
        return [row.text.strip() for row in gen.generate(requests)]

    def qa_scores(self, params) -> tuple[dict, list[tuple[str, str, list[str]]]]:
        """Exact match and F1 on up to sft.eval_questions validation questions, and the
        (question, answer, references) triples."""
        recs = self.data["val_records"][:self.cfg.sft.eval_questions]
        questions = [r["prompt"] if "prompt" in r else _last_user(r) for r in recs]
        answers = self.answer(params, questions)
        refs = [qa.references(r) for r in recs]
        return qa.scores(answers, refs), list(zip(questions, answers, refs))

    def end_of_training(self, params, model_state) -> tuple[dict, list[str]]:
        if self.cfg.sft.eval_questions == 0:
            return {}, []
        scores, triples = self.qa_scores(params)
        lines = [f"{q!r} -> {a!r} (reference {r[0]!r})" for q, a, r in triples[:8]]
        text = (f"QA on {scores['count']} validation questions (greedy, the run's template): "
                f"exact match {scores['exact_match']:.1f}, F1 {scores['f1']:.1f}\n" +
                "\n".join(lines))
        return {"qa_exact_match": scores["exact_match"], "qa_f1": scores["f1"],
                "qa_questions": scores["count"]}, [text]

    def samples(self, params, model_state) -> list[str]:
        return self.end_of_training(params, model_state)[1]


def _last_user(record: dict) -> str:
    users = [m["content"] for m in record["messages"] if m.get("role") == "user"]
    return users[-1] if users else ""
