"""Per-run table of a CdSprites-N sweep: accuracy under each selection rule and ``grad_cos``.

Usage: python benchmarks/cdsprites_table.py sweeps/cdsprites [--steps 200,300,1000,2000]

One row per finished run (N, method, trial): the ``test`` accuracy the ``val_env`` rule reports
(the checkpoint with the best whole-``val`` accuracy, as the Fish code picks it), the step
it picked, the ``test`` accuracy at the last step, and ``grad_cos`` (mean pairwise cosine of
the domains' classifier-head gradients, averaged over the steps since the previous record)
at the record steps asked for. Selection goes through ``bench.selection.select``, the code
the leaderboard uses, so the rows add up to its cells.
"""

from __future__ import annotations

import argparse

from bench.report_files import load_runs
from bench.selection import select


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", help="a sweep's output directory")
    parser.add_argument("--steps", default="200,300,1000,2000", help="record steps for grad_cos")
    args = parser.parse_args()
    steps = [int(s) for s in args.steps.split(",")]
    found = [r for r in load_runs(args.runs) if r.spec["dataset"].startswith("cdsprites_")]
    runs = [r for r in found if r.status == "ok"]  # as the leaderboard: finished runs only
    by_id = {r.run_id: r for r in runs}
    picks = {(s.run_id, s.test_env): s for s in select(runs, "val_env") if s.run_id}
    header = ["N", "method", "trial", "test % (val_env)", "step picked", "test % (last)"]
    print("| " + " | ".join(header + [f"grad_cos {s}" for s in steps] + ["run"]) + " |")
    print("|" + "---|" * (len(header) + len(steps) + 1))
    order = sorted(
        by_id.values(),
        key=lambda r: (
            int(r.spec["dataset"].split("_n")[-1]),
            r.spec["algorithm"],
            r.spec["trial_seed"],
        ),
    )
    for run in order:
        pick = picks.get((run.run_id, "test"))
        last = run.records[-1]["eval"]["test"]["in"]["acc"]
        cos = {r["step"]: r["train"].get("grad_cos") for r in run.records}
        cells = [
            run.spec["dataset"].split("_n")[-1],
            run.spec["algorithm"],
            str(run.spec["trial_seed"]),
            f"{100 * pick.acc:.1f}" if pick and pick.acc is not None else "-",
            str(pick.step) if pick else "-",
            f"{100 * last:.1f}" if last is not None else "-",
            *(f"{cos[s]:+.2f}" if cos.get(s) is not None else "-" for s in steps),
            run.run_id,
        ]
        print("| " + " | ".join(cells) + " |")
    if len(runs) < len(found):
        print(f"\n{len(found) - len(runs)} run(s) not finished (or diverged/damaged) left out")


if __name__ == "__main__":
    main()
