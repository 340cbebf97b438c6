"""Compare runs: curves and a side-by-side summary from their metrics.jsonl.

    lmjax report runs/gpt runs/lstm --out=reports/gpt-vs-lstm
    lmjax report runs/gpt          # writes runs/gpt/report/

Writes one PNG per curve (training loss, every validation metric) with all runs overlaid, and
report.md: the runs side by side with steps, wall time, throughput, and the final and best
value of every validation metric. Lower is better for metrics named like a loss or an error,
higher for the rest (accuracy, F1, ...).
"""

from __future__ import annotations

import os

from absl import flags

from lmjax.cli.common import fail
from lmjax.eval.curves import report

_OUT = flags.DEFINE_string("out", "", "Where to write the PNGs and report.md (default: "
                           "<workdir>/report for one run, ./report for several).")


def main(args: list[str]) -> None:
    if not args:
        fail("give one or more run directories (the --workdir of training), e.g. "
             "lmjax report runs/gpt runs/lstm")
    out = _OUT.value or (os.path.join(args[0], "report") if len(args) == 1 else "report")
    print(report(args, out))
    print(f"Curves and report.md in {out}")
