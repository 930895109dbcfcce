"""Select -> aggregate -> tables. Cells are ``mean ± std (n)`` over trials of the selected test
accuracy.

std uses ddof=1; n is always shown, and a cell with fewer trials than the dataset's
sweep shows ``k/n``. Optional SE and a 95% t-interval. Each cell gets a paired t-test against
the report's baseline row (ERM; a transfer report names a recipe) over the trials both have
(scipy); the p-values of one table (every algorithm x column) are Holm-adjusted as one
family, and ``*`` marks adjusted p < 0.05.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
from scipy import stats as st
from tabulate import tabulate

from bench import statistics
from bench.selection import (
    RULES,
    Run,
    Selected,
    algorithm_labels,
    dataset_labels,
    rule_names,
    select,
    split_pair_runs,
    validation_env,
)
from bench.statistics import BASELINE

ALPHA = 0.05
FORMATS = {"markdown": "github", "latex": "latex", "plain": "simple"}


@dataclass(frozen=True)
class Cell:
    """Per-trial selected values of one (dataset, rule, algorithm, column) and their summary."""

    values: dict[int, float]
    expected: int
    diverged: int = 0
    partial: int = 0
    damaged: int = 0
    p_vs_baseline: float | None = None  # Holm-adjusted within the cell's table
    p_raw: float | None = None  # the paired t-test's own p-value

    @property
    def n(self) -> int:
        return len(self.values)

    def summary(self) -> dict[str, float | None]:
        v = np.array(list(self.values.values()), dtype=float)
        if len(v) == 0:
            return {"mean": None, "std": None, "se": None, "ci_lo": None, "ci_hi": None}
        mean = float(v.mean())
        if len(v) < 2:
            return {"mean": mean, "std": None, "se": None, "ci_lo": None, "ci_hi": None}
        std = float(v.std(ddof=1))
        se = std / math.sqrt(len(v))
        half = float(st.t.ppf(0.975, len(v) - 1)) * se
        return {"mean": mean, "std": std, "se": se, "ci_lo": mean - half, "ci_hi": mean + half}

    def format(self, spread: str = "std", ci: bool = False) -> str:
        """``71.7 ± 0.5 (3)``; ``(2/3)`` when trials are missing; ``–`` when none; ``*`` when
        significant."""
        count = f"({self.n})" if self.n == self.expected else f"({self.n}/{self.expected})"
        s = self.summary()
        if s["mean"] is None:
            return f"– {count}"
        text = f"{100 * s['mean']:.1f}"
        if s["std"] is not None:
            text += f" ± {100 * s[spread]:.1f}"
        text += f" {count}"
        if ci and s["ci_lo"] is not None:
            text += f" [{100 * s['ci_lo']:.1f}, {100 * s['ci_hi']:.1f}]"
        if self.p_vs_baseline is not None and self.p_vs_baseline < ALPHA:
            text += " *"
        return text


@dataclass(frozen=True)
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)

    def render(self, fmt: str = "markdown") -> str:
        return tabulate(
            self.rows, headers=self.headers, tablefmt=FORMATS[fmt], disable_numparse=True
        )


@dataclass
class Report:
    """Selections of every rule over one set of runs, with each dataset's environment order."""

    runs: list[Run]
    rules: list[str]
    selected: dict[str, list[Selected]]
    env_order: dict[str, list[str]]
    labels: dict[str, str]  # run_id -> dataset label
    rows: dict[str, str] = field(
        default_factory=dict
    )  # run_id -> row label (algorithm, and its config if several)
    damaged: list[Run] = field(default_factory=list)  # every damaged run, excluded from every cell
    baseline: str = BASELINE  # the row every other row is tested against, listed first

    def dataset_runs(self, dataset: str) -> list[Run]:
        return [r for r in self.runs if self.labels[r.run_id] == dataset]

    @property
    def datasets(self) -> list[str]:
        """Natural order, so ``cdsprites_n2`` comes before ``cdsprites_n10``."""
        return sorted(
            self.env_order,
            key=lambda name: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)],
        )

    def algorithms(self, dataset: str | None = None) -> list[str]:
        found = {
            s.algorithm
            for sel in self.selected.values()
            for s in sel
            if dataset is None or s.dataset == dataset
        }
        return sorted(found, key=lambda a: (a != self.baseline, a))

    def columns(self, dataset: str) -> list[str]:
        present = {
            s.test_env for sel in self.selected.values() for s in sel if s.dataset == dataset
        }
        return [e for e in self.env_order[dataset] if e in present]

    def trials(self, dataset: str) -> list[int]:
        return sorted(
            {s.trial_seed for sel in self.selected.values() for s in sel if s.dataset == dataset}
        )

    def has_values(self, dataset: str, rule: str) -> bool:
        return any(s.acc is not None for s in self.selected[rule] if s.dataset == dataset)


def build_report(
    runs: Sequence[Run], rules: str | Sequence[str] = ("train_val",), baseline: str = BASELINE
) -> Report:
    names = rule_names(rules)
    damaged = [r for r in runs if r.status == "damaged"]
    runs = [
        r for r in runs if r.spec
    ]  # a damaged run with a readable spec still counts in its cells
    labels = dataset_labels(runs)
    env_order: dict[str, list[str]] = {}
    for run in split_pair_runs(runs)[0]:
        if run.records:
            env_order.setdefault(labels[run.run_id], list(run.records[0]["eval"]))
    rows = algorithm_labels(runs, labels)
    return Report(
        list(runs),
        names,
        {rule: select(runs, rule) for rule in names},
        env_order,
        labels,
        rows,
        damaged,
        baseline,
    )


def damage_notes(report: Report) -> list[str]:
    """One line per damaged run: excluded from every table, re-run by the sweep command."""
    return [
        f"Damaged run {r.run_id} (excluded; re-running its sweep trains it again): {r.damage}"
        for r in report.damaged
    ]


def cells(report: Report, dataset: str, rule: str) -> dict[str, dict[str, Cell]]:
    """column -> algorithm -> Cell, with ``Avg`` and ``Worst`` (per-trial mean and minimum over the
    test environments, over the trials complete in every one) when there are several."""
    expected = len(report.trials(dataset))
    columns = report.columns(dataset)
    if rule == "val_env":  # the validation environment picks the checkpoint; it reports nothing
        names = {r.spec["dataset"] for r in report.dataset_runs(dataset)}
        columns = [c for c in columns if c not in {validation_env(n) for n in names}]
    chosen = [s for s in report.selected[rule] if s.dataset == dataset]
    table: dict[str, dict[str, Cell]] = {}
    for column in columns:
        table[column] = {}
        for a in report.algorithms(dataset):
            mine = [s for s in chosen if s.algorithm == a and s.test_env == column]
            values = {s.trial_seed: s.acc for s in mine if s.acc is not None}
            table[column][a] = Cell(
                values,
                expected,
                *(
                    sum(getattr(s, f"n_{k}") for s in mine)
                    for k in ("diverged", "partial", "damaged")
                ),
            )
        table[column] = statistics.with_test(table[column], report.baseline)
    if len(columns) > 1:
        for name, combine in AGGREGATES.items():
            aggregated = {}
            for a in report.algorithms(dataset):
                per = [table[c][a].values for c in columns]
                complete = set.intersection(*(set(v) for v in per))
                aggregated[a] = Cell(
                    {t: float(combine([v[t] for v in per])) for t in sorted(complete)}, expected
                )
            table[name] = statistics.with_test(aggregated, report.baseline)
    return statistics.holm_table(table)


AGGREGATES = {"Avg": np.mean, "Worst": np.min}  # over test environments, per trial


def metric_name(report: Report, dataset: str) -> str:
    """The dataset's primary metric as recorded with its runs' records (``acc`` unless the protocol
    says otherwise)."""
    found = {
        rec.get("metric", "acc") for r in report.dataset_runs(dataset) for rec in r.records[:1]
    }
    return found.pop() if len(found) == 1 else "acc"


def chance_levels(report: Report, dataset: str) -> dict[str, float]:
    """Per test environment, the share of its majority class in the reported (``in``) split.

    Read from the confusion counts the records keep, so a board can say what a constant
    predictor would score; empty for records without them.
    """
    out: dict[str, float] = {}
    for env in report.columns(dataset):
        for run in report.dataset_runs(dataset):
            split = run.records[0]["eval"].get(env, {}).get("in", {}) if run.records else {}
            if split.get("confusion") and env in run.spec["test_envs"]:
                per_class: dict[int, int] = {}
                for true, _, count in split["confusion"]:
                    per_class[true] = per_class.get(true, 0) + count
                out[env] = max(per_class.values()) / sum(per_class.values())
                break
    return out


METRIC_NOTES = {
    "mcc": "Metric: Matthews correlation coefficient (MCC) x 100, the dataset's primary metric; "
    "chance is 0."
}


def mean_ranks(
    columns: dict[str, dict[str, Cell]], skip: Sequence[str] = tuple(AGGREGATES)
) -> dict[str, float | None]:
    """Mean over columns of each algorithm's rank by mean accuracy (1 = best, ties averaged)."""
    ranks: dict[str, list[float]] = {}
    for name, column in columns.items():
        if name in skip:
            continue
        present = [(a, c.summary()["mean"]) for a, c in column.items() if c.n]
        for (a, _), r in zip(present, st.rankdata([-m for _, m in present])):
            ranks.setdefault(a, []).append(float(r))
    return {
        a: float(np.mean(ranks[a])) if a in ranks else None
        for column in columns.values()
        for a in column
    }


def baseline_name(baseline: str) -> str:
    """How a footnote names the baseline row: ERM as papers write it, any other as labelled."""
    return "ERM" if baseline == BASELINE else f"the baseline `{baseline}`"


def legend(spread: str, ci: bool, baseline: str = BASELINE) -> str:
    text = (
        "Cells: the test environment's primary metric x 100 (accuracy unless noted), "
        f"mean ± {'std (ddof=1)' if spread == 'std' else 'SE'} "
        "over trials (n trials; k/n when some are missing); Worst: the lowest test "
        "environment per trial"
    )
    if ci:
        text += ", [95% t-interval]"
    return text + (
        f"; * paired t-test vs {baseline_name(baseline)} over shared trials, p < {ALPHA} after "
        "Holm's correction "
        "over all comparisons in the table (p-values in selected.csv/json)."
    )


def dataset_table(
    report: Report, dataset: str, rule: str, spread: str = "std", ci: bool = False
) -> Table:
    """One row per algorithm: a column per test environment, Avg, mean rank, runs that diverged."""
    columns = cells(report, dataset, rule)
    ranks = mean_ranks(columns)
    chosen = [s for s in report.selected[rule] if s.dataset == dataset]
    single = len(columns) == 1
    headers = [
        "algorithm",
        *(["train envs"] if single else []),
        *columns,
        "rank",
        "runs diverged / unfinished / damaged",
    ]
    rows = []
    for a in report.algorithms(dataset):
        train = Cell(
            {
                s.trial_seed: s.train_acc
                for s in chosen
                if s.algorithm == a and s.train_acc is not None
            },
            len(report.trials(dataset)),
        )
        rank = ranks.get(a)
        runs = " / ".join(
            str(sum(getattr(c[a], k) for c in columns.values()))
            for k in ("diverged", "partial", "damaged")
        )
        rows.append(
            [
                a,
                *([train.format(spread)] if single else []),
                *(columns[c][a].format(spread, ci) for c in columns),
                "–" if rank is None else f"{rank:.2f}",
                runs,
            ]
        )
    notes = [
        legend(spread, ci, report.baseline),
        f"Selection: {RULES[rule][0]} (`{rule}`).",
        *([METRIC_NOTES[m]] if (m := metric_name(report, dataset)) in METRIC_NOTES else []),
    ]
    chance = chance_levels(report, dataset) if m == "acc" else {}
    if chance:
        levels = ", ".join(f"{env} {100 * share:.1f}%" for env, share in chance.items())
        notes.append(f"Chance (the majority class of each test environment): {levels}.")
    if single:
        notes.append(
            "train envs: mean accuracy over the training environments at the selected "
            "checkpoint (their `in` splits, or `out` where `in` was not evaluated)."
        )
    reasons: dict[str, list[str]] = {}
    for s in chosen:
        if s.acc is None and s.test_env in columns:  # val_env's validation env is no column
            reasons.setdefault(s.reason, []).append(
                f"{s.algorithm}/{s.test_env}/trial {s.trial_seed}"
            )
    notes += [f"Missing ({reason}): {', '.join(where)}." for reason, where in reasons.items()]
    return Table(f"{dataset} — {rule}", headers, rows, notes)


def summary_table(report: Report, rule: str, spread: str = "std") -> Table:
    """Algorithms x datasets (each dataset's Avg, or its single column), with the mean rank over
    datasets."""
    datasets = [d for d in report.datasets if report.has_values(d, rule)]
    per = {}
    for d in datasets:
        columns = cells(report, d, rule)
        per[d] = columns["Avg"] if "Avg" in columns else next(iter(columns.values()))
    ranks = mean_ranks(per)
    rows = []
    for a in report.algorithms():
        row = [a] + [per[d][a].format(spread) if a in per[d] else "–" for d in datasets]
        rank = ranks.get(a)
        rows.append(row + ["–" if rank is None else f"{rank:.2f}"])
    return Table(
        f"summary — {rule}",
        ["algorithm", *datasets, "rank"],
        rows,
        [
            legend(spread, False, report.baseline),
            f"Selection: {RULES[rule][0]} (`{rule}`); each dataset's average over test "
            "environments.",
        ],
    )


def render_tables(report: Report, fmt: str = "plain", spread: str = "std", ci: bool = False) -> str:
    """Summary then every (dataset, rule) table that has values, as one text block (what
    ``bench run`` prints)."""
    parts = []
    for rule in report.rules:
        parts.append(_render(summary_table(report, rule, spread), fmt))
        parts += [_render(dataset_table(report, d, rule, spread, ci), fmt) for d in report.datasets]
    return "\n\n".join(parts)


def _render(table: Table, fmt: str) -> str:
    notes = "\n".join(table.notes)
    return f"{table.title}\n{table.render(fmt)}\n{notes}"
