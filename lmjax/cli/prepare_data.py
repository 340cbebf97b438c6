"""Prepare a large text corpus once: stream it, clean and deduplicate it, tokenize it in
parallel worker processes and write token shards (llm.c's .bin format) with a manifest.
Interrupted (even kill -9), the same command continues where it stopped.

    lmjax prepare_data --config=configs/gpt.py:gpt2_124m \\
        --config.data.name=stream --config.data.files='corpus/*.jsonl.gz' \\
        --config.data.vocab_size=32768

Training with the same --config flags reads the prepared shards (or prepares them first);
the printed folder also works as --config.data.name=shards --config.data.shards=<folder>.
Stages, formats and the report: docs/data.md.
"""

from __future__ import annotations

import json
import os

from ml_collections import config_flags

from lmjax.cli.common import fail, require
from lmjax.config import validate
from lmjax.data.prepare import prepare

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config whose data section to "
                                          "prepare.", lock_config=True)


def main(args: list[str]) -> None:
    cfg = require(_CONFIG.value, "--config is required, e.g. --config=configs/gpt.py "
                  "--config.data.name=stream --config.data.files='corpus/*.jsonl'")
    if cfg.data.get("name") != "stream":
        fail(f"data.name={cfg.data.get('name')!r}: this command prepares data.name=stream "
             "(with --config.data.files=...); other sources are prepared by training itself.")
    validate(cfg)
    data = prepare(cfg.data)
    with open(os.path.join(data.directory, "report.json")) as f:
        report = json.load(f)
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value:,}" if isinstance(value, int) else
              f"{key:<{width}}  {value}")
    print(f"\nshards: {data.directory}\ntrain with the same flags, or with "
          f"--config.data.name=shards --config.data.shards={data.directory}")
