"""The interface every task implements, with its defaults, and the padding of evaluation batches.

A task is built in one of two ways:
- for training, from its config alone: it reads its data and derives what inference needs (the
  tokenizer, the class names, the resolved model config);
- from a run directory's assets (`lmjax/rundir.py`): the model, tokenizer and class names come
  from the run, and the data is read only if a batch is asked for (evaluation), encoded with the
  run's own tokenizer. Generating, serving and converting never touch the data.
"""

from __future__ import annotations

from typing import Callable, Iterator

import jax
import ml_collections
import numpy as np

from lmjax import rundir

# What a task can do, declared so that the commands never probe a task for attributes
# (`Task.capabilities`; checked by tests/test_layering.py):
DECODES = "decodes"            # continues token sequences (GPT, RNN): generate, serve, samples
ANSWERS = "answers"            # answers questions in a template (SFT): POST /v1/qa
IMAGES = "images"              # classifies images (H, W, C): attacks, image explanations
CLASSES = "classes"            # predicts one of `class_names`; evaluation yields probabilities
TEXT_CLASSES = "text_classes"  # classifies token rows ([CLS] passage [SEP]): /v1/classify, ig, lime
MASKED_LM = "masked_lm"        # predicts masked tokens (BERT)
CAPABILITY_NAMES = {DECODES: "generates text (task lm or sft: a GPT)",
                    ANSWERS: "answers questions (task sft)",
                    IMAGES: "classifies images (task classify on images)",
                    CLASSES: "classifies (task classify or text_classify)",
                    TEXT_CLASSES: "classifies text (task text_classify: a BERT classifier)",
                    MASKED_LM: "predicts masked tokens (task mlm)"}


class Task:
    """Base class: subclasses set `model` and implement the methods that raise here."""

    matrix_dims = None  # for optim.name='muon': which parameters are weight matrices
    trainable = None    # params -> tree of bools: only True leaves train (LoRA); None: all
    splits = ("val",)   # evaluation splits; a task with an official test split adds "test"
    tokens_per_example = 1  # what throughput counts: tokens per example for sequence tasks
    tokenizer = None
    capabilities: frozenset = frozenset()  # keys of CAPABILITY_NAMES
    class_names: tuple = ()  # what CLASSES tasks predict, in order
    seq_len = 0         # the model's context (sequence tasks)
    members = 1         # models trained at once (an ensemble's members)
    head_modules = ()   # top-level modules a fine-tune trains from scratch (LoRA trains them)

    def __init__(self, cfg: ml_collections.ConfigDict, assets: rundir.Assets | None = None,
                 log=print):
        self.cfg, self.assets, self.log = cfg, assets, log

    @classmethod
    def check(cls, cfg: ml_collections.ConfigDict) -> None:
        """Checks the config sections this task reads (beyond the core ones that
        lmjax.config.validate checks), before any data is read: errors name the field."""

    def init_variables(self, rng: jax.Array) -> dict:
        """The flax variables: 'params' (with logical axis names) and any other collections."""
        raise NotImplementedError

    def loss(self, params, model_state, batch: dict, rng: jax.Array):
        """(loss, (aux metrics, new model_state))."""
        raise NotImplementedError

    def eval_outputs(self, params, model_state, batch: dict) -> dict:
        """{'sums': {..., 'count'}, 'examples': {...}}: sums that add up across batches and
        devices, and per-example arrays for metrics over the whole set."""
        raise NotImplementedError

    def train_batch(self, step: int, process_index: int = 0, process_count: int = 1) -> dict:
        """This process's rows of the global batch at `step`: a pure function of (seed, step)."""
        raise NotImplementedError

    def eval_batches(self, batch_size: int, max_examples: int = 0,
                     split: str = "val") -> Iterator[dict]:
        """Fixed evaluation batches with a `weights` row mask (0 for padding rows)."""
        raise NotImplementedError

    def run_assets(self) -> rundir.Assets:
        """What a run directory keeps so that the model can be used without the data."""
        raise NotImplementedError

    # -- examples: what DP-SGD samples, federated clients hold, attacks and explanations read

    def example_arrays(self, split: str = "train") -> dict:
        """A split's examples as arrays (memory-mapped where large), for `gather`."""
        raise NotImplementedError(f"{type(self).__name__} has no indexed examples.")

    def num_examples(self, split: str = "train") -> int:
        """How many examples `gather` can index in `split` (a language model's: window
        starts)."""
        raise NotImplementedError(f"{type(self).__name__} has no indexed examples.")

    def gather(self, arrays: dict, ids) -> dict:
        """The batch of examples `ids` from `example_arrays(...)`, unaugmented: NumPy on the host,
        or traced inside a jitted step (federated rounds gather on the device)."""
        raise NotImplementedError(f"{type(self).__name__} has no indexed examples.")

    def examples(self, split: str, ids) -> dict:
        """The batch of examples `ids` of `split`, on the host."""
        return self.gather(self.example_arrays(split), np.asarray(ids))

    def labels(self, split: str = "train") -> np.ndarray | None:
        """Every example's label in `split`, or None for tasks without labels."""
        return None

    def example_groups(self) -> list[np.ndarray] | None:
        """Training example ids grouped by where they come from (a language model: the window
        starts of each document), or None: federated training's one client per group."""
        return None

    # -- the model --------------------------------------------------------------------------

    @property
    def model_config(self):
        """The typed config of the model (without adapters): what conversions and the
        decoder read."""
        return getattr(self.model, "cfg", None)

    def plain_model(self, params) -> tuple:
        """(module, params) of the model as inference sees it: plain weights (a LoRA run's
        adapters folded in). Default: the model itself."""
        return self.model, params

    def _assets(self, model_cfg, **fields) -> rundir.Assets:
        return rundir.Assets(task=self.cfg.task, model=model_cfg.to_dict(),
                             config=self.cfg.to_dict(), tokenizer=self.tokenizer, **fields)

    def summarize(self, sums: dict, examples: dict) -> dict:
        count = sums.pop("count")
        return {k: v / count for k, v in sums.items()}

    def describe(self) -> str:
        return ""

    def extra_metrics(self, step: int) -> dict:
        """Scalars logged beside every evaluation at `step` (DP-SGD: the epsilon spent)."""
        return {}

    def may_be_best(self, step: int) -> bool:
        """Whether the state at `step` may be kept as the best checkpoint (pruning: only once
        the target sparsity is reached)."""
        return True

    def samples(self, params, model_state) -> list[str]:
        return []

    def end_of_training(self, params, model_state) -> tuple[dict, list[str]]:
        """(scalar metrics, texts) the trainer reports once training ends: the scalars go to
        metrics.jsonl (split 'final') and the run's summary, the texts to the console. A task
        whose end-of-run texts also measure something (SFT's answers: exact match, F1)
        overrides this, so the one decoding pass yields both."""
        return {}, self.samples(params, model_state)

    def value_and_grad(self) -> Callable:
        """(params, model_state, batch, rng) -> ((loss, (aux, model_state)), grads): what the
        train step differentiates. Wrappers change it (DP-SGD: clipped per-example gradients)."""
        return jax.value_and_grad(self.loss, has_aux=True)

    def wrap_optimizer(self, tx):
        """The optimizer this task trains with, given the one the `optim` section built
        (DP-SGD adds its noise here). Default: unchanged."""
        return tx

    def load_pretrained(self, params, pretrained):
        """Starting parameters when config.init_from names another run (default: all of them)."""
        return pretrained


def padded_batches(num_examples: int, batch_size: int,
                   fetch: Callable[[np.ndarray], dict]) -> Iterator[dict]:
    """Fixed batches over examples 0..n-1; the last is padded by repeating rows with weight 0."""
    for i in range(0, num_examples, batch_size):
        idx = np.arange(i, min(i + batch_size, num_examples))
        weights = np.zeros(batch_size, np.float32)
        weights[:len(idx)] = 1.0
        yield {**fetch(np.resize(idx, batch_size)), "weights": weights}


def epoch_indices(seed: int, step: int, batch_size: int, num_examples: int) -> np.ndarray:
    """The example indices of one global batch: each epoch is a fresh permutation of the data,
    drawn from (seed, epoch), so the batch at any step is known without replaying the run."""
    if num_examples < batch_size:
        raise ValueError(f"{num_examples} training examples are fewer than one batch "
                         f"({batch_size}): lower train.batch_size.")
    per_epoch = num_examples // batch_size  # the remainder is dropped, differently each epoch
    epoch, pos = divmod(step, per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_examples)
    return order[pos * batch_size:(pos + 1) * batch_size]


def with_tokenizer_file(data: ml_collections.ConfigDict,
                        tokenizer_file: str) -> ml_collections.ConfigDict:
    """A copy of a `data` section that encodes with a fixed tokenizer file (a run's own)."""
    data = ml_collections.ConfigDict(data.to_dict())
    with data.unlocked():
        data.tokenizer_file = tokenizer_file
    return data
