"""SFT's end-of-training QA evaluation: seconds to answer N validation questions greedily.

    python benchmarks/sft_qa_eval.py                      # 148 questions, random weights
    python benchmarks/sft_qa_eval.py --questions=148 --repeats=3
    python benchmarks/sft_qa_eval.py --workdir=runs/qa-sft     # a trained SFT run instead

The setup is configs/sft.py's default (4 layers, d=128, context 256, max_answer_tokens 24) on
the closed-book QA set (qa_shakespeare), with a byte-level BPE of 2,048 trained on the corpus
here, or a trained run's weights and tokenizer (--workdir). It times `SFTTask.answer`, the
call `qa_scores` makes at the end of training. The first call includes compiling (what the
end of a run pays, since it answers once); the later calls are timed on their own. The random
weights' matrices are scaled up (--gain) so that greedy answers vary from token to token
instead of repeating one space; they never produce the stop string, so every answer runs to
max_answer_tokens: the most work per question. The printed digest of the answers lets runs of
two versions check that they gave the same answers.

The decoder before lmjax/models/decoding.py (one jitted call per token): run this script from
a worktree of the commit that added it, e.g. `git worktree add /tmp/before $(git log
--format=%h -1 --diff-filter=A -- benchmarks/sft_qa_eval.py)`.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time

import flax.linen as nn
import jax

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from lmjax.config import load_config  # noqa: E402
from lmjax.data.shakespeare import works  # noqa: E402
from lmjax.data.tokenizers import BPETokenizer  # noqa: E402
from lmjax.tasks import make_task  # noqa: E402
from lmjax.train.restore import load_run  # noqa: E402


def random_setup(vocab_size: int, gain: float):
    """(task, params): configs/sft.py's default model with random weights (matrices times
    `gain`) and a BPE tokenizer trained on the corpus."""
    cfg = load_config("configs/sft.py")
    tokenizer_dir = tempfile.mkdtemp()
    BPETokenizer.train(works().values(), vocab_size).save(tokenizer_dir)
    cfg.data.tokenizer_file = os.path.join(tokenizer_dir, "tokenizer.json")
    task = make_task(cfg, log=lambda s: None)
    params = nn.meta.unbox(task.init_variables(jax.random.PRNGKey(0))["params"])
    return task, jax.tree.map(lambda x: x * gain if x.ndim >= 2 else x, params)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--questions", type=int, default=148, help="validation questions answered")
    p.add_argument("--repeats", type=int, default=2, help="timed calls after the first")
    p.add_argument("--vocab_size", type=int, default=2048)
    p.add_argument("--gain", type=float, default=3.0, help="random weights: matrices scaled")
    p.add_argument("--workdir", default="", help="a trained SFT run instead of random weights")
    args = p.parse_args()

    if args.workdir:
        _, task, state = load_run(args.workdir)
        params = state.params
    else:
        task, params = random_setup(args.vocab_size, args.gain)
    recs = task.data["val_records"][:args.questions]
    questions = [r["prompt"] for r in recs]
    s = task.cfg.sft
    print(f"{len(questions)} questions, model {task.model.cfg.num_layers} layers "
          f"d={task.model.cfg.d_model} context {task.seq_len}, max_answer_tokens "
          f"{s.max_answer_tokens}, device {jax.devices()[0].device_kind}")
    times, answers = [], None
    for i in range(1 + args.repeats):
        t = time.perf_counter()
        got = task.answer(params, questions)
        times.append(time.perf_counter() - t)
        assert answers is None or got == answers, "a repeated call gave other answers"
        answers = got
        print(f"call {i}{' (compile included)' if i == 0 else ''}: {times[-1]:.2f}s, "
              f"{len(questions) / times[-1]:.1f} questions/s", flush=True)
    warm = statistics.median(times[1:]) if args.repeats else times[0]
    digest = hashlib.sha256("\x00".join(answers).encode()).hexdigest()[:16]
    print(f"first call {times[0]:.2f}s; later calls (median) {warm:.2f}s = "
          f"{len(questions) / warm:.1f} questions/s; answers digest {digest}; "
          f"mean answer length {statistics.mean(len(a) for a in answers):.1f} characters")


if __name__ == "__main__":
    main()
