"""The run directory is the artifact: everything needed to use a run's model, without its data.

    <workdir>/run.json         what the run is: task, resolved model config, class names, the
                               shape of one input, the training config
    <workdir>/tokenizer.json   the tokenizer (tasks that read text); a Hugging Face one's
                               tokenizer_config.json beside it (special tokens, chat template)
    <workdir>/checkpoints/     training state by step (and best/ with early stopping)
    <workdir>/params/          an int8 export's quantized parameters instead (lmjax quantize)

Training writes `run.json` and the tokenizer before its first step. Generating, serving,
quantizing, converting and evaluating a run read them, so a run directory copied to another
machine works there without the corpus or the data cache (evaluation still needs the split it
evaluates; it is re-encoded with the run's own tokenizer).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import tempfile

from lmjax.checkpoint import CheckpointError
from lmjax.data.tokenizers import load_tokenizer

META = "run.json"
TOKENIZER = "tokenizer.json"
FORMAT = "lmjax-run-v1"


class MissingAssets(CheckpointError):
    """A directory without run.json: not a run, or one written before run directories held
    their assets (lmjax.tasks.assets.read_assets upgrades those)."""


@dataclasses.dataclass
class Assets:
    task: str                      # 'lm', 'mlm', 'classify', ... (lmjax/tasks/__init__.py)
    model: dict                    # the resolved model config (vocabulary filled in)
    config: dict                   # the training config
    tokenizer: object = None       # for tasks that read text
    class_names: list | None = None
    example: dict | None = None    # {'shape': [...], 'dtype': ...} of one input (classifiers)
    weights: str = "float"         # 'float' (checkpoints/) or 'int8' (params/, an export)
    source: str = ""               # provenance, for exports
    tokenizer_file: str = ""       # where the tokenizer was read from

    def to_json(self) -> dict:
        d = {k: v for k, v in dataclasses.asdict(self).items()
             if k not in ("tokenizer", "tokenizer_file")}
        return {"format": FORMAT, **d}


def write(directory: str, assets: Assets) -> None:
    """Writes run.json (and tokenizer.json) atomically: each file is complete or absent, and
    run.json, written last, marks the set complete."""
    os.makedirs(directory, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=directory, prefix=".tmp-assets-")
    try:
        if assets.tokenizer is not None:  # tokenizer.json (+ tokenizer_config.json: its
            assets.tokenizer.save(tmp)    # special tokens and chat template, if it has them)
            for name in sorted(os.listdir(tmp), key=lambda n: n == TOKENIZER):
                os.replace(os.path.join(tmp, name), os.path.join(directory, name))
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(assets.to_json(), f, indent=1)
        os.replace(os.path.join(tmp, META), os.path.join(directory, META))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def checkpoint_dir(workdir: str, best: bool = False) -> str:
    return os.path.join(workdir, "best" if best else "checkpoints")


def has_best(workdir: str) -> bool:
    """Whether the run kept a best checkpoint (train.early_stopping_metric was set)."""
    directory = checkpoint_dir(workdir, best=True)
    return os.path.isdir(directory) and bool(os.listdir(directory))


def exists(directory: str) -> bool:
    return os.path.exists(os.path.join(directory, META))


def read(directory: str) -> Assets:
    path = os.path.join(directory, META)
    if not os.path.exists(path):
        raise MissingAssets(f"{directory} has no {META}.")
    with open(path) as f:
        meta = json.load(f)
    if meta.pop("format", None) != FORMAT:
        raise CheckpointError(f"{path} is not in the format {FORMAT!r} of this lmjax version.")
    tokenizer_file = os.path.join(directory, TOKENIZER)
    has_tokenizer = os.path.exists(tokenizer_file)
    return Assets(**meta, tokenizer=load_tokenizer(directory) if has_tokenizer else None,
                  tokenizer_file=tokenizer_file if has_tokenizer else "")
