"""Boards with post-hoc rows: ``erm + swad``, ``erm + t3a``, ``ensemble(erm)`` beside ``erm``.

The runs of an output directory are turned into the rows a board shows, then the usual
report and leaderboard code (selection rules, statistics, markdown) runs unchanged:

- a run without averaging is its algorithm's row, as always;
- a run trained with weight averaging gives two: its raw model, which *is* the run without
  averaging (same numbers; a plain run of the same spec in the directory is kept instead),
  and ``<algorithm> + <kind>`` from its ``averaged.jsonl``;
- test-time adaptations and combinations are rows from their result files
  (``bench/posthoc/results.py``).

A row's label spells its non-default configuration (``erm + t3a [filter_k=5]``), so a cell
never pools two configurations.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from bench import leaderboard, records
from bench import report as rp
from bench.commands import current_syntax
from bench.errors import UserError
from bench.posthoc.averaging_config import AVERAGING
from bench.posthoc.results import (
    AVERAGED,
    derived_runs,
    label,
    posthoc_commands,
    strip_averaging,
)
from bench.report_files import load_runs
from bench.selection import Run
from bench.spec import RunSpec


def averaged_steps(spec: Mapping[str, Any]) -> list[int]:
    """The steps an averaged run's ``averaged.jsonl`` holds once finished."""
    steps = records.record_steps(spec["steps"], spec["eval_every"])
    config = spec["averaging"]
    if config["kind"] == "swad":
        return steps[-1:]
    start = int(config.get("start_fraction", 0.0) * spec["steps"])
    return [s for s in steps if s >= start]


def averaged_rows(output_dir: str | Path, run: Run) -> tuple[Run, Run]:
    """(the raw model as the plain run, the averaged model's row) of a run with averaging."""
    plain = strip_averaging(run.spec)
    raw = Run(
        RunSpec.from_dict(plain).run_id,
        plain,
        run.hparams,
        run.records,
        run.status,
        run.command,
        run.git,
        run.damage,
        run.protocol,
    )
    config = run.spec["averaging"]
    defaults = {k: p.default for k, p in AVERAGING[config["kind"]].items()}
    spec = {**plain, "algorithm": label(plain["algorithm"], config["kind"], config, defaults)}
    row_id = f"{run.run_id}-{config['kind']}"
    path = Path(output_dir) / "runs" / run.run_id / AVERAGED
    try:
        found = tuple(records.read_records(path))
    except records.DamagedRun as exc:
        return raw, Run(row_id, spec, run.hparams, (), "damaged", damage=str(exc))
    steps = [r["step"] for r in found]
    expected = averaged_steps(run.spec)
    status, damage = run.status, run.damage
    if run.status == "ok" and steps != expected:
        status, damage = "damaged", f"{path}: steps {steps}, expected {expected}"
    return raw, Run(
        row_id,
        spec,
        run.hparams,
        found if status == "ok" else (),
        status,
        run.command,
        run.git,
        damage,
        run.protocol,
    )


def board_runs(output_dir: str | Path) -> list[Run]:
    """Every row's runs in ``output_dir``: plain runs, averaged runs split in two, results."""
    runs = load_runs(output_dir)
    out: dict[str, Run] = {}
    extra: list[Run] = []
    for run in runs:
        if run.spec.get("averaging"):
            raw, averaged = averaged_rows(output_dir, run)
            out.setdefault(raw.run_id, raw)
            extra.append(averaged)
        else:
            out[run.run_id] = run
    return [*out.values(), *extra, *derived_runs(output_dir, runs)]


def write_board(
    output_dir: str | Path,
    out: str | Path,
    rules: str | Sequence[str] = ("train_val",),
    command: str = "",
    title: str = "Leaderboard",
) -> Path:
    """The leaderboard of ``output_dir`` with its post-hoc rows; returns the markdown path."""
    runs = board_runs(output_dir)
    if not runs:
        raise UserError(f"{output_dir}: no runs (expected {Path(output_dir) / 'runs'}/<run_id>/)")
    report = rp.build_report(runs, rules)
    return leaderboard.write(
        report,
        out,
        records.git_commit(),
        command,
        title,
        commands=board_commands(output_dir),
        notes=single_checkpoint_note(runs),
    )


def single_checkpoint_note(runs: Sequence[Run]) -> list[str]:
    """The caveat of rows with one checkpoint per run (final weights: test-time adaptation,
    ensembles, DiWA; SWAD's one average): a rule that chooses the step for their base rows
    (``train_val``) chooses among their hparams samples only."""
    rows = sorted(
        {
            r.spec["algorithm"]
            for r in runs
            if r.status == "ok"
            and len(r.records) == 1
            and len(records.record_steps(r.spec["steps"], r.spec["eval_every"])) > 1
        }
    )
    if not rows:
        return []
    return [
        f"Rows from final weights ({', '.join(f'`{r}`' for r in rows)}) have one checkpoint "
        "per run: selection rules choose among their hparams samples only, where rules that "
        "choose the step (`train_val`, `loo`, `val_env`) also choose it for their base rows."
    ]


def board_commands(output_dir: str | Path) -> list[str]:
    """The commands that made ``output_dir``'s rows, in the order they must be run: training
    (today's syntax, sorted: sweeps are independent), then test-time adaptation and combining,
    which read the trained runs, in the order they were run."""
    trained = sorted({current_syntax(r.command) for r in load_runs(output_dir) if r.command})
    return [*trained, *posthoc_commands(output_dir)]
