"""Reports to and from disk: runs loaded from an output directory, and the per-trial values
behind every cell written as CSV/JSON."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Iterable

from bench import records
from bench.report import Report, cells
from bench.selection import Run, Selected


def load_runs(output_dir: str | Path, run_ids: Iterable[str] | None = None) -> list[Run]:
    """Every run under ``output_dir`` (or only ``run_ids``) with its records and status.

    A run whose files are unreadable or inconsistent comes back with status ``damaged``,
    no records and the reason; its spec too if that was readable (``{}`` otherwise).
    """
    records.check_output_dir(output_dir)
    wanted = None if run_ids is None else set(run_ids)
    runs = []
    for d in records.iter_runs(output_dir):
        if wanted is not None and d.name not in wanted:
            continue
        try:
            info = records.read_spec(d)
            status, found = records.check_run(d)
        except records.DamagedRun as exc:
            runs.append(Run(d.name, _readable_spec(d), {}, (), "damaged", damage=str(exc)))
            continue
        runs.append(
            Run(
                info["run_id"],
                info["spec"],
                info["hparams"],
                tuple(found),
                status,
                info.get("command", ""),
                info.get("meta", {}).get("git"),
                protocol=info.get("protocol", {}),
            )
        )
    return runs


def _readable_spec(directory: Path) -> dict[str, Any]:
    try:
        return records.read_spec(directory)["spec"]
    except records.DamagedRun:
        return {}


def selected_rows(report: Report) -> list[dict[str, Any]]:
    """Flat per-trial rows (every rule): the values behind every cell, with the chosen run and
    hparams, and the cell's paired test against the baseline (raw and Holm-adjusted p)."""
    rows = []
    for rule in report.rules:
        tables = {d: cells(report, d, rule) for d in report.datasets}
        for s in report.selected[rule]:
            cell = tables.get(s.dataset, {}).get(s.test_env, {}).get(s.algorithm)
            row = {
                "rule": rule,
                **asdict(s),
                "p_vs_erm": cell and cell.p_raw,
                "p_vs_erm_holm": cell and cell.p_vs_baseline,
            }
            row["hparams"] = dict(s.hparams)
            row["acc_pct"] = None if s.acc is None else 100 * s.acc  # the tables' unit
            rows.append(row)
    return rows


def write_selected(report: Report, csv_path: Path, json_path: Path) -> None:
    rows = selected_rows(report)
    json_path.write_text(json.dumps(rows, indent=1, sort_keys=True) + "\n")
    fields = [
        "rule",
        *(f for f in Selected.__dataclass_fields__),
        "acc_pct",
        "p_vs_erm",
        "p_vs_erm_holm",
    ]
    with open(csv_path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "hparams": json.dumps(row["hparams"], sort_keys=True)})
