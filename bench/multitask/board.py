"""The multi-task board: per-task test metric, the average, and the gain over single-task.

Cells are ``mean ± std (n)`` over trials at the selected hparams (``results.select``):
accuracy in % for classification, mean squared error for regression. The gain table gives,
per task, the mean over trials of the paired difference with the baseline row
(``single_task``), signed so that positive means better than learning the task alone (more
accuracy, less error); ``*`` marks a Holm-adjusted paired t-test p < 0.05, one family per
table (``bench.statistics``). "avg" is the mean over tasks when they share a metric.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Sequence

import numpy as np
from tabulate import tabulate

from bench.errors import UserError
from bench.multitask.affinity import affinity_figure
from bench.multitask.provenance import regenerate
from bench.multitask.results import Run, load_runs, scored_tasks, select
from bench.multitask.tasks import TASK_SETS, Task
from bench.statistics import holm, paired_p

BASELINE = "single_task"
ALPHA = 0.05
AVG = "avg"
# hard sharing where the trunk is shared; on the linear family (linear trunks share nothing)
# Evgeniou & Pontil's w0
AFFINITY_METHODS = ("hard_sharing", "evgeniou_pontil")


def test_values(runs: dict[int, Run], task: Task | None, tasks: list[Task]) -> dict[int, float]:
    """Per trial: the task's test metric, or (task None) the mean over ``tasks``."""
    chosen = tasks if task is None else [task]
    return {
        trial: float(np.mean([run.final["eval"][t.name]["test"] for t in chosen]))
        for trial, run in runs.items()
    }


def cell(values: dict[int, float], task: Task) -> str:
    v = np.array(list(values.values()))
    scale = 100.0 if task.kind == "classification" else 1.0
    text = f"{scale * v.mean():.1f}" if scale == 100.0 else f"{v.mean():.3f}"
    if len(v) > 1:
        spread = scale * v.std(ddof=1)
        text += f" ± {spread:.1f}" if scale == 100.0 else f" ± {spread:.3f}"
    return f"{text} ({len(v)})"


def columns(tasks: list[Task]) -> list[tuple[str, Task | None]]:
    """Task columns, then ``avg`` when every task has the same metric."""
    out: list[tuple[str, Task | None]] = [(t.name, t) for t in tasks]
    if len(tasks) > 1 and len({t.metric for t in tasks}) == 1:
        out.append((AVG, None))
    return out


def metric_table(rows: dict[str, dict[int, Run]], tasks: list[Task]) -> str:
    header = ["method", *(name for name, _ in columns(tasks))]
    body = []
    for row, runs in rows.items():
        scored = scored_tasks(runs[min(runs)].spec["method"], runs[min(runs)].spec["tasks"])
        line = [row]
        for _, task in columns(tasks):
            shown = task in scored if task is not None else len(scored) == len(tasks)
            line.append(cell(test_values(runs, task, tasks), task or tasks[0]) if shown else "–")
        body.append(line)
    return tabulate(body, header, tablefmt="github", disable_numparse=True)


def gains(
    rows: dict[str, dict[int, Run]], tasks: list[Task]
) -> dict[tuple[str, str], tuple[dict[int, float], float | None]]:
    """``{(row, column): (per-trial gain over the baseline, raw paired p)}``."""
    base = rows.get(BASELINE)
    if base is None:
        return {}
    out = {}
    for row, runs in rows.items():
        if row == BASELINE:
            continue
        scored = scored_tasks(runs[min(runs)].spec["method"], runs[min(runs)].spec["tasks"])
        for name, task in columns(tasks):
            if (task is None and len(scored) < len(tasks)) or (
                task is not None and task not in scored
            ):
                continue
            sign = 1.0 if (task or tasks[0]).kind == "classification" else -1.0
            mine, theirs = test_values(runs, task, tasks), test_values(base, task, tasks)
            shared = sorted(set(mine) & set(theirs))
            diff = {t: sign * (mine[t] - theirs[t]) for t in shared}
            out[(row, name)] = (diff, paired_p(mine, theirs))
    return out


def gain_table(rows: dict[str, dict[int, Run]], tasks: list[Task]) -> str:
    found = gains(rows, tasks)
    if not found:
        return f"(no `{BASELINE}` runs: no gains)"
    tested = [k for k, (_, p) in found.items() if p is not None]
    adjusted = dict(zip(tested, holm([found[k][1] for k in tested])))
    header = ["method", *(name for name, _ in columns(tasks))]
    body = []
    for row in rows:
        if row == BASELINE:
            continue
        line = [row]
        for name, task in columns(tasks):
            if (row, name) not in found:
                line.append("–")
                continue
            diff, _ = found[(row, name)]
            scale = 100.0 if (task or tasks[0]).kind == "classification" else 1.0
            mean = scale * float(np.mean(list(diff.values()))) if diff else float("nan")
            star = "*" if adjusted.get((row, name), 1.0) < ALPHA else ""
            line.append((f"{mean:+.1f}" if scale == 100.0 else f"{mean:+.3f}") + star)
        body.append(line)
    return tabulate(body, header, tablefmt="github", disable_numparse=True)


def board(
    output_dir: str | Path,
    split_by: Sequence[str] = (),
    figures: str | Path | None = None,
    affinity_methods: Sequence[str] = AFFINITY_METHODS,
    links_from: str | Path = ".",
    commit: str | None = None,
    command: str | None = None,
) -> str:
    """The board of the finished multi-task runs in ``output_dir`` (see ``render``)."""
    runs = load_runs(output_dir)
    if not runs:
        raise UserError(
            f"no finished multi-task runs in {output_dir}; "
            "run `python -m bench.multitask sweep` first"
        )
    return render(runs, split_by, figures, affinity_methods, links_from, commit, command)


def render(
    runs: list[Run],
    split_by: Sequence[str] = (),
    figures: str | Path | None = None,
    affinity_methods: Sequence[str] = AFFINITY_METHODS,
    links_from: str | Path = ".",
    commit: str | None = None,
    command: str | None = None,
) -> str:
    """Markdown; with ``figures`` (a folder), one affinity heatmap per task set, of the first
    of ``affinity_methods`` that recorded gradient cosines there, linked relative to
    ``links_from`` (the folder the markdown file is written to). With ``command`` (the board
    command as typed; ``commit``: the code's that runs it) the page ends with how to
    regenerate it (``provenance.regenerate``); the text is a function of these arguments."""
    parts = ["# Multi-task board", "", _legend(split_by)]
    for tasks, rows in select(runs, split_by).items():
        task_list = list(TASK_SETS.get(tasks).TASKS)
        parts += [f"## {tasks}", "", metric_table(rows, task_list), ""]
        parts += [
            f"Gain over `{BASELINE}` (paired over trials):",
            "",
            gain_table(rows, task_list),
            "",
        ]
        if figures is not None:
            drawn = affinity_figure(tasks, rows, affinity_methods, Path(figures))
            if drawn is not None:
                link = os.path.relpath(drawn[0], links_from)
                parts += [f"Task affinity (gradient cosine, `{drawn[1]}`): ![]({link})", ""]
    if command is not None:
        parts += regenerate([run.info for run in runs], commit, command)
    return "\n".join(parts)


def _legend(split_by: Sequence[str]) -> str:
    rows = f"; rows split by {', '.join(split_by)}" if split_by else ""
    return (
        "Test metric at the last step, hparams chosen by mean validation score: accuracy in % "
        "(classification) or mean squared error (regression), mean ± std (trials). Gains are "
        f"signed so positive is better than `{BASELINE}`; * = Holm-adjusted paired t-test "
        f"p < {ALPHA}. – : not scored (pretrain_finetune scores its main task only){rows}.\n"
    )
