"""Ensemble and calibration figures of an `ensemble.members=M` run (issue 18, part 5).

    python benchmarks/ensemble.py --workdir=runs/fashion_ensemble --png=docs/reliability.png

Evaluates the run's best checkpoint on validation and test, every member from the stacked
parameters and the ensemble (the mean of the members' probabilities), and prints ECE (15
bins), NLL, Brier and accuracy for each, the issue's targets with pass/fail, and temperature
scaling of member 0 and of the ensemble fitted on validation (Guo et al.: T minimises validation NLL; the members'
probabilities are the softmax of log-probabilities, so log p serves as the logits). Writes
--json with every figure and --png, a reliability diagram of member 0 and of the ensemble, before and
after scaling.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

from lmjax import rundir  # noqa: E402
from lmjax.eval import calibration  # noqa: E402
from lmjax.train.restore import load_setup  # noqa: E402


def member_probs(s, state, split: str, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """([N, M, C] member probabilities, [N] labels) over the whole split."""
    step = s.eval_step()
    probs, labels = [], []
    for batch in s.task.eval_batches(batch_size, 0, split):
        out = step(state.params, state.model_state, batch)["examples"]
        keep = np.asarray(batch["weights"]) > 0
        probs.append(np.asarray(out["member_probs"])[keep])
        labels.append(np.asarray(out["labels"])[keep])
    return np.concatenate(probs), np.concatenate(labels)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--batch_size", type=int, default=500)
    ap.add_argument("--json", default="")
    ap.add_argument("--png", default="")
    args = ap.parse_args()

    s, state = load_setup(args.workdir, best=rundir.has_best(args.workdir))
    members = getattr(s.task, "members", 1)
    if members < 2:
        sys.exit(f"{args.workdir} is not an ensemble run (ensemble.members={members}).")
    val_p, val_y = member_probs(s, state, "val", args.batch_size)
    test_p, test_y = member_probs(s, state, "test", args.batch_size)

    rows = {f"member {i}": calibration.calibration_report(test_p[:, i], test_y)
            for i in range(members)}
    ensemble = calibration.calibration_report(test_p.mean(1), test_y)
    rows["ensemble"] = ensemble
    logits0 = np.log(np.clip(val_p[:, 0], 1e-12, 1))
    t = calibration.fit_temperature(logits0, val_y)
    scaled0 = calibration.scaled_probs(np.log(np.clip(test_p[:, 0], 1e-12, 1)), t)
    rows[f"member 0, T={t:.3f}"] = calibration.calibration_report(scaled0, test_y)
    # The ensemble scaled the same way (Ashukha et al. 2020 compare ensembles only after it):
    # averaging calibrated members makes an under-confident ensemble, which T < 1 sharpens.
    t_ens = calibration.fit_temperature(np.log(np.clip(val_p.mean(1), 1e-12, 1)), val_y)
    scaled_ens = calibration.scaled_probs(np.log(np.clip(test_p.mean(1), 1e-12, 1)), t_ens)
    rows[f"ensemble, T={t_ens:.3f}"] = calibration.calibration_report(scaled_ens, test_y)

    print(f"{args.workdir}: {members} members, {len(test_y)} test images")
    print(f"{'':>18} {'accuracy':>9} {'NLL':>7} {'ECE':>7} {'Brier':>7}")
    for name, r in rows.items():
        print(f"{name:>18} {100 * r['accuracy']:>8.2f}% {r['nll']:>7.4f} {r['ece']:>7.4f} "
              f"{r['brier']:>7.4f}")
    member_rows = [rows[f"member {i}"] for i in range(members)]
    best = max(r["accuracy"] for r in member_rows)
    mean_ece = float(np.mean([r["ece"] for r in member_rows]))
    targets = {
        "accuracy >= best member + 0.5 points":
            (100 * ensemble["accuracy"], 100 * best + 0.5),
        "NLL below every member's": (ensemble["nll"], min(r["nll"] for r in member_rows)),
        "ECE <= half the mean member ECE": (ensemble["ece"], mean_ece / 2),
        "temperature-scaled member 0 ECE <= 0.015":
            (rows[f"member 0, T={t:.3f}"]["ece"], 0.015),
    }
    for name, (value, bound) in targets.items():
        ok = value >= bound if name.startswith("accuracy") else (
            value < bound if name.startswith("NLL") else value <= bound)
        print(f"  {'MET ' if ok else 'MISS'} {name}: {value:.4f} (bound {bound:.4f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"rows": rows, "temperature": t, "ensemble_temperature": t_ens,
                       "targets": {k: list(v) for k, v in targets.items()}}, f, indent=1)
    if args.png:
        calibration.reliability_diagram(
            test_p[:, 0], test_y, args.png, "member 0",
            others={f"member 0, T={t:.2f}": (scaled0, test_y),
                    f"ensemble of {members}": (test_p.mean(1), test_y),
                    f"ensemble, T={t_ens:.2f}": (scaled_ens, test_y)})
        print(f"Reliability diagram: {args.png}")


if __name__ == "__main__":
    main()
