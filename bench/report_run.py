"""Human-readable summaries of single runs (``bench run`` output and ``bench show``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tabulate import tabulate

from bench import records
from bench.commands import current_syntax
from bench.errors import UserError
from bench.selection import task_name


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def run_table(record: dict[str, Any] | None, test_envs: tuple[str, ...] | list[str]) -> str:
    """Accuracy (%) of every environment's in/out split at one record, test environments marked."""
    if record is None:
        return "(no evaluation recorded)"
    rows = [
        [
            name + (" (test)" if name in test_envs else ""),
            _pct(parts["in"]["acc"]),
            parts["in"]["n"],
            _pct(parts["out"]["acc"]),
            parts["out"]["n"],
        ]
        for name, parts in record["eval"].items()
    ]
    return f"step {record['step']}\n" + tabulate(
        rows, headers=["environment", "in acc %", "n", "out acc %", "n"]
    )


def show(path: Path) -> str:
    """Summary of one run directory, or a one-line-per-run list for an output directory; damaged
    runs say why."""
    path = Path(path)
    if (path / records.SPEC).exists():
        return _show_run(path)
    runs = list(records.iter_runs(path))
    if not runs:
        raise UserError(
            f"{path} is neither a run directory (no {records.SPEC}) nor an output "
            "directory with runs/"
        )
    records.check_output_dir(path)
    rows = []
    for d in runs:
        try:
            spec = records.read_spec(d)["spec"]
            status = records.check_run(d)[0]
        except records.DamagedRun as exc:
            rows.append([d.name, "?", "?", "?", "?", "?", f"damaged: {exc}"])
            continue
        rows.append(
            [
                d.name,
                task_name(spec),
                spec["dataset"],
                ",".join(spec["test_envs"]),
                spec["trial_seed"],
                spec["hparams_seed"],
                status,
            ]
        )
    return tabulate(
        rows, headers=["run", "algorithm", "dataset", "test envs", "trial", "hparams", "status"]
    )


def _show_run(path: Path) -> str:
    info = records.read_spec(path)
    spec = info["spec"]
    head = [
        f"run {info['run_id']}: {task_name(spec)} on {spec['dataset']}, test envs "
        f"{', '.join(spec['test_envs'])}, "
        f"trial {spec['trial_seed']}, hparams seed {spec['hparams_seed']}",
    ]
    try:
        status, found = records.check_run(path)
    except records.DamagedRun as exc:
        return "\n".join([*head, f"status: damaged: {exc}", "re-run its command to train it again"])
    done = records.read_json(path / records.DONE) if status != "partial" else None
    lines = [
        *head,
        f"status: {status} at step {done['step']}; {len(found)} evaluations; wall "
        f"{done['wall_s']:.1f}s"
        if done
        else f"status: partial; {len(found)} evaluations",
        f"command: {current_syntax(info.get('command') or '-')}",
        f"git: {info['meta'].get('git')}  torch: {info['meta'].get('torch')}  data: {spec['data']}",
        "hparams: " + ", ".join(f"{k}={v}" for k, v in sorted(info["hparams"].items())),
        run_table(found[-1] if found else None, spec["test_envs"]),
    ]
    return "\n".join(lines)
