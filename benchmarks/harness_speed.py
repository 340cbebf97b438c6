"""lm-evaluation-harness on one run, three ways, in log-likelihood requests per second:
lmjax's in-process LM (every request of the task scored together, batched by length), and
lm-eval's `local-completions` against the real server, batched (`batch_size=N` in its model
args) and one request at a time (its default).

    python benchmarks/harness_speed.py --workdir=runs/gpt               # 200 documents
    python benchmarks/harness_speed.py --workdir=runs/gpt --docs=400 --batch_size=32

The task is written here, offline: a multiple-choice "which continuation" task on held-out
Shakespeare (Hamlet's lines): a context of --context characters, the true next
--continuation characters and three taken from other lines; so 4 requests a document. All
three ways must give the same accuracy (the script checks it): the figures compare speed on
the same work. The load average is printed beside them: measure on an idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # the repo

from lmjax.data import shakespeare  # noqa: E402
from lmjax.eval import harness  # noqa: E402
from lmjax.infer.load import load  # noqa: E402
from lmjax.models.generator import Generator  # noqa: E402
from lmjax.serve.app import create_app  # noqa: E402
from lmjax.serve.local import serve_in_thread  # noqa: E402

TASK = "hamlet_continuation"


def write_task(directory: str, docs: int, context: int, continuation: int, seed: int) -> None:
    lines = [ln.strip() for ln in shakespeare.works()["hamlet"].splitlines()
             if len(ln.strip()) >= context + continuation]
    rng = random.Random(seed)
    picked = rng.sample(lines, docs)
    records = []
    for line in picked:
        others = rng.sample([ln for ln in lines if ln != line], 3)
        choices = [line[context:context + continuation]] + [
            o[context:context + continuation] for o in others]
        order = list(range(4))
        rng.shuffle(order)
        records.append({"context": line[:context], "choices": [choices[i] for i in order],
                        "answer": order.index(0)})
    data = os.path.join(directory, "docs.jsonl")
    with open(data, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    with open(os.path.join(directory, f"{TASK}.yaml"), "w") as f:
        f.write(f"task: {TASK}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
                f"    test: {data}\ntest_split: test\noutput_type: multiple_choice\n"
                'doc_to_text: "{{context}}"\ndoc_to_choice: "{{choices}}"\n'
                'doc_to_target: "{{answer}}"\ntarget_delimiter: ""\nmetric_list:\n'
                "  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n")


def timed(fn) -> tuple[dict, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", default="runs/gpt")
    p.add_argument("--docs", type=int, default=200)
    p.add_argument("--context", type=int, default=24)
    p.add_argument("--continuation", type=int, default=12)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    import lm_eval  # noqa: lazy, optional extra (lm_eval[api])

    loaded = load(a.workdir)
    requests = 4 * a.docs
    with tempfile.TemporaryDirectory() as tasks:
        write_task(tasks, a.docs, a.context, a.continuation, a.seed)
        manager = harness.task_manager(tasks, [TASK])
        rows = []

        def in_process():
            return harness.run(loaded.model, loaded.params, loaded.tokenizer, [TASK],
                               include_path=tasks, batch_size=64)

        in_process()  # compiles the length buckets: timed below is the second pass
        out, seconds = timed(in_process)
        rows.append(("lmjax harness (in process)", out, seconds))

        app = create_app(Generator(loaded.model, loaded.params, loaded.tokenizer),
                         model_name="run")
        with serve_in_thread(app) as base:
            for label, batch in (("local-completions, batch_size=1", 1),
                                 (f"local-completions, batch_size={a.batch_size}",
                                  a.batch_size)):
                args = (f"base_url={base}/v1/completions,model=run,tokenizer_backend=remote,"
                        f"max_length={loaded.model.cfg.block_size},batch_size={batch}")

                def served(args=args):
                    return lm_eval.simple_evaluate(model="local-completions", model_args=args,
                                                   tasks=[TASK], task_manager=manager,
                                                   bootstrap_iters=0)

                served()  # the server's prompt buckets compile, untimed: timed is the second
                out, seconds = timed(served)
                rows.append((label, out, seconds))

    accuracies = {label: out["results"][TASK]["acc,none"] for label, out, _ in rows}
    print(f"{a.workdir}: {a.docs} documents, {requests} log-likelihood requests; "
          f"load average {os.getloadavg()[0]:.2f}")
    print("| path | seconds | requests/s | accuracy |\n| --- | --- | --- | --- |")
    for label, out, seconds in rows:
        print(f"| {label} | {seconds:.1f} | {requests / seconds:.1f} | "
              f"{accuracies[label]:.3f} |")
    base = rows[1][2]
    print(f"in process: {base / rows[0][2]:.1f}x the one-at-a-time server path; batched "
          f"server: {base / rows[2][2]:.1f}x")
    if len(set(accuracies.values())) != 1:
        sys.exit(f"the accuracies differ: {accuracies}")


if __name__ == "__main__":
    main()
