"""Multi-task runs read back from an output directory, and the hparams each board row uses.

Only whole runs count (``records.check_run``: status ok, records complete); DG runs in the
same directory are skipped by their spec's ``kind``. Selection is per (task set, row):
the hparams seed whose final validation score, averaged over the scored tasks and the
trials, is best; a row is a method, or a method and the values of ``split_by`` hparams
(one row per rescaling factor, say) when the board compares those values instead of
choosing among them.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from bench import records
from bench.multitask.method import METHODS
from bench.multitask.spec import KIND
from bench.multitask.tasks import TASK_SETS, Task


@dataclass(frozen=True)
class Run:
    spec: dict[str, Any]
    records: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)  # spec.json: command, meta (provenance)

    @property
    def final(self) -> dict[str, Any]:
        return self.records[-1]


def load_runs(output_dir: str | Path) -> list[Run]:
    """Every whole multi-task run under ``output_dir/runs``."""
    found = []
    for directory in records.iter_runs(output_dir):
        try:
            info = records.read_spec(directory)
            if info["spec"].get("kind") != KIND:
                continue
            status, recs = records.check_run(directory)
        except records.DamagedRun:
            continue
        if status == "ok":
            found.append(Run(info["spec"], recs, info))
    return found


def scored_tasks(method: str, tasks: str) -> list[Task]:
    """The tasks a method's numbers are about (only the main one for pretrain-then-finetune)."""
    task_set = TASK_SETS.get(tasks)
    if getattr(METHODS.get(method), "SCORED", "all") == "main":
        return [t for t in task_set.TASKS if t.name == task_set.main_task()]
    return list(task_set.TASKS)


def row_label(spec: dict[str, Any], split_by: Sequence[str]) -> str:
    shown = [f"{k}={spec['hparams'][k]:g}" for k in split_by if k in spec["hparams"]]
    return " ".join([spec["method"], *shown])


def validation_score(run: Run) -> float:
    tasks = scored_tasks(run.spec["method"], run.spec["tasks"])
    return float(np.mean([t.score(run.final["eval"][t.name]["val"]) for t in tasks]))


def select(runs: list[Run], split_by: Sequence[str] = ()) -> dict[str, dict[str, dict[int, Run]]]:
    """``{task set: {row: {trial seed: run}}}`` at each row's best hparams seed (among the
    seeds with the most finished trials, so a half-finished draw cannot win by luck)."""
    groups: dict[tuple[str, str], dict[int, dict[int, Run]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for run in runs:
        key = (run.spec["tasks"], row_label(run.spec, split_by))
        groups[key][run.spec["hparams_seed"]][run.spec["trial_seed"]] = run
    out: dict[str, dict[str, dict[int, Run]]] = defaultdict(dict)
    for (tasks, row), by_seed in sorted(groups.items()):
        best = max(
            sorted(by_seed),
            key=lambda s: (
                len(by_seed[s]),
                np.mean([validation_score(r) for r in by_seed[s].values()]),
            ),
        )
        out[tasks][row] = by_seed[best]
    return dict(out)
