"""Transfer results through the DG selection and report code, plus the layer-transfer figure.

Two adaptations make transfer runs fit ``bench.selection``/``bench.report`` unchanged:
a run is labelled by its recipe *and* its overrides (``frozen_first_n[n=2]`` and
``frozen_first_n[n=3]`` are different methods, not hparams samples of one), and a run
with several test splits (``target_test`` and OOD splits) is seen once per split, its
records restricted to the training environment and that split, so validation only
ever sees the target's own ``out`` data. Tables test every row against a baseline recipe,
``scratch`` (the same network trained on the target alone) unless told otherwise.
"""

from __future__ import annotations

import difflib
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.report import Report, build_report, render_tables
from bench.report_files import load_runs
from bench.selection import Run, Selected
from bench.transfer.recipes import Recipe

BASELINE_RECIPE = "scratch"  # the same network trained on the target alone


def variant_label(spec: Mapping[str, Any]) -> str:
    """``recipe`` or ``recipe[key=value,...]`` from the run's overrides (sorted)."""
    overrides = spec.get("overrides") or {}
    if not overrides:
        return spec["algorithm"]
    return (
        spec["algorithm"] + "[" + ",".join(f"{k}={overrides[k]}" for k in sorted(overrides)) + "]"
    )


def _view(run: Run, test_env: str) -> Run:
    others = set(run.spec["test_envs"]) - {test_env}
    kept = tuple(
        {**r, "eval": {e: v for e, v in r["eval"].items() if e not in others}} for r in run.records
    )
    spec = {**run.spec, "algorithm": variant_label(run.spec), "test_envs": [test_env]}
    return replace(run, spec=spec, records=kept)


def transfer_views(runs: Sequence[Run]) -> list[Run]:
    """Every transfer-recipe run as one single-test-split run per test split, labelled by
    variant."""
    recipes = {n for n in ALGORITHMS.names() if issubclass(ALGORITHMS.get(n), Recipe)}
    return [
        _view(run, t)
        for run in runs
        if run.spec.get("algorithm") in recipes
        for t in run.spec["test_envs"]
    ]


def load_transfer_runs(output_dir: str | Path) -> list[Run]:
    return transfer_views(load_runs(output_dir))


def check_baseline(baseline: str) -> str:
    """``baseline`` when it names a registered recipe (``scratch``, or a variant label such as
    ``frozen_first_n[n=2]``); else one UserError line with the closest recipes."""
    recipes = sorted(n for n in ALGORITHMS.names() if issubclass(ALGORITHMS.get(n), Recipe))
    if baseline.split("[")[0] not in recipes:
        close = difflib.get_close_matches(baseline, recipes, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise UserError(
            f"unknown baseline recipe {baseline!r}.{hint} Recipes: {', '.join(recipes)}"
        )
    return baseline


def baseline_row(views: Sequence[Run], baseline: str) -> str:
    """The row label of recipe ``baseline``: the label itself, or the one variant of that recipe
    in ``views`` (``scratch[pretrain_steps=500]`` when every run had that override).

    UserError (one line) when ``baseline`` is no recipe, has no runs or names several rows.
    """
    check_baseline(baseline)
    rows = sorted({v.spec["algorithm"] for v in views})
    if baseline in rows:
        return baseline
    variants = [r for r in rows if r.split("[")[0] == baseline]
    if len(variants) != 1:
        found = "no runs" if not variants else f"several rows ({', '.join(variants)})"
        raise UserError(
            f"baseline recipe {baseline!r}: {found} among these results; rows: "
            f"{', '.join(rows) or 'none'}; run it too, or name another with --baseline"
        )
    return variants[0]


def transfer_report(
    output_dir: str | Path,
    rules: Sequence[str],
    baseline: str = BASELINE_RECIPE,
    run_ids: Sequence[str] | None = None,
) -> tuple[Report, list[Run]]:
    """``bench.report.build_report`` over the transfer views (of ``run_ids``, default all), with
    every test split as a table column and the ``baseline`` recipe's row as the baseline."""
    runs = load_runs(output_dir, run_ids)
    views = transfer_views(runs)
    report = build_report(views, rules, baseline_row(views, baseline))
    for run in runs:  # each view holds one test split; the columns list them all, in record order
        if run.records and run.run_id in report.labels:
            report.env_order[report.labels[run.run_id]] = list(run.records[0]["eval"])
    return report, views


def transfer_tables(
    output_dir: str | Path,
    rules: Sequence[str],
    baseline: str = BASELINE_RECIPE,
    run_ids: Sequence[str] | None = None,
    fmt: str = "plain",
) -> str:
    """Every transfer table of ``output_dir``, the baseline row first and named in the footnote
    (what a transfer sweep prints)."""
    return render_tables(transfer_report(output_dir, rules, baseline, run_ids)[0], fmt)


def layer_transfer_figure(
    selected: Sequence[Selected], runs: Sequence[Run], test_env: str, path: Path, title: str
) -> dict[str, dict[int, list[float]]]:
    """Accuracy vs n for AnB, BnB, AnB+, BnB+ (mean ± std over trials, points per trial) with the
    base-B line.

    Returns the plotted values: series -> n -> per-trial accuracies.
    """
    import matplotlib  # lazy: only the figures need matplotlib, which is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hparams = {r.run_id: r.hparams for r in runs}
    series: dict[str, dict[int, list[float]]] = {}
    base: list[float] = []
    names = {
        ("frozen_first_n", "source"): "AnB",
        ("frozen_first_n", "target"): "BnB",
        ("reinit_above_n", "source"): "AnB+",
        ("reinit_above_n", "target"): "BnB+",
    }
    for s in selected:
        if s.acc is None or s.test_env != test_env:
            continue
        hp = hparams[s.run_id]
        recipe = s.algorithm.split("[")[0]
        if recipe == "scratch":
            base.append(s.acc)
        elif (recipe, hp.get("pretrain_data")) in names:
            series.setdefault(names[recipe, hp["pretrain_data"]], {}).setdefault(
                hp["n"], []
            ).append(s.acc)
    styles = {
        "AnB": ("tab:red", "o", "-"),
        "BnB": ("tab:blue", "o", "-"),
        "AnB+": ("tab:red", "s", "--"),
        "BnB+": ("tab:blue", "s", "--"),
    }
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    tops = []
    for ax in axes:  # the right panel zooms in on the lines near base B
        for name in ("BnB", "BnB+", "AnB", "AnB+"):
            if name not in series:
                continue
            ns = sorted(series[name])
            means = [100 * np.mean(series[name][n]) for n in ns]
            stds = [
                100 * np.std(series[name][n], ddof=1) if len(series[name][n]) > 1 else 0.0
                for n in ns
            ]
            if name != "AnB":
                tops += [m + s for m, s in zip(means, stds)]
            color, marker, line = styles[name]
            ax.errorbar(
                ns,
                means,
                yerr=stds,
                color=color,
                marker=marker,
                linestyle=line,
                capsize=3,
                label=name,
            )
            for n in ns:
                ax.scatter(
                    [n] * len(series[name][n]),
                    [100 * v for v in series[name][n]],
                    color=color,
                    s=8,
                    alpha=0.4,
                )
        if base:
            ax.axhline(
                100 * np.mean(base),
                color="black",
                linewidth=1,
                label=f"base B (scratch), {len(base)} trials",
            )
        ax.set_xlabel("n (blocks copied from the pretrained network)")
        ax.set_ylabel(f"{test_env} accuracy (%)")
        ax.set_xticks(sorted({n for s in series.values() for n in s}))
        ax.grid(alpha=0.3)
    axes[0].set_title(title)
    axes[0].legend(fontsize=8)
    if base and tops:
        low = min(
            100 * min(base),
            *(100 * min(v) for k, s in series.items() if k != "AnB" for v in s.values()),
        )
        axes[1].set_ylim(low - 0.5, max(tops) + 0.5)
        axes[1].set_title("zoom: BnB, AnB+, BnB+ vs base B")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return {"base B": {0: base}, **series}


def learning_curve_figure(
    selected: Sequence[Selected],
    task: str,
    test_env: str,
    path: Path,
    title: str,
    labels: Sequence[str] | None = None,
) -> dict[str, dict[str, list[float]]]:
    """Accuracy vs target examples per class (one line per recipe variant; mean ± std over trials).

    ``selected`` rows of ``task`` and its few-shot variants ``task_k<K>`` (only the variant
    ``labels`` when given); "all" is drawn right of the largest K.
    """
    import matplotlib  # lazy: only the figures need matplotlib, which is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, dict[str, list[float]]] = {}
    for s in selected:
        if (
            s.acc is None
            or s.test_env != test_env
            or not (s.dataset == task or s.dataset.startswith(f"{task}_k"))
            or (labels and s.algorithm not in labels)
        ):
            continue
        shots = DATASETS.get(s.dataset).SHOTS
        curves.setdefault(s.algorithm, {}).setdefault(
            "all" if shots is None else str(shots), []
        ).append(s.acc)
    sizes = sorted(
        {k for c in curves.values() for k in c},
        key=lambda k: (k == "all", int(k) if k != "all" else 0),
    )
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, curve in sorted(curves.items()):
        xs = [i for i, k in enumerate(sizes) if k in curve]
        means = [100 * np.mean(curve[sizes[i]]) for i in xs]
        stds = [
            100 * np.std(curve[sizes[i]], ddof=1) if len(curve[sizes[i]]) > 1 else 0.0 for i in xs
        ]
        ax.errorbar(xs, means, yerr=stds, marker="o", capsize=3, label=name)
    ax.set_xticks(range(len(sizes)))
    ax.set_xticklabels(sizes)
    ax.set_xlabel("target training examples per class (train + validation)")
    ax.set_ylabel(f"{test_env} accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return curves


def diagnostics_figure(
    runs: Sequence[Run], path: Path, title: str
) -> dict[str, dict[str, list[float]]]:
    """Per block, the relative weight change and the angle to the start weights at the last
    evaluation (mean over runs).

    ``runs`` are grouped by variant label; returns label -> metric -> per-block means.
    """
    import matplotlib  # lazy: only the figures need matplotlib, which is slow to import

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups: dict[str, list[dict[str, float]]] = {}
    for run in runs:
        if run.records:
            groups.setdefault(run.spec["algorithm"], []).append(run.records[-1]["train"])
    blocks = sorted(
        {
            k.split("/")[1]
            for t in (v for g in groups.values() for v in g)
            for k in t
            if k.startswith("diag/")
        },
        key=lambda b: (b == "head", b),
    )
    out: dict[str, dict[str, list[float]]] = {}
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    width = 0.8 / max(1, len(groups))
    for i, (label, trains) in enumerate(sorted(groups.items())):
        out[label] = {}
        for ax, metric, name in (
            (axes[0], "dw_rel", "||W - W0|| / ||W0||"),
            (axes[1], "angle", "angle(W, W0) (degrees)"),
        ):
            values = [
                float(np.mean([t.get(f"diag/{b}/{metric}", np.nan) for t in trains]))
                for b in blocks
            ]
            out[label][metric] = values
            ax.bar(np.arange(len(blocks)) + i * width, values, width, label=label)
            ax.set_ylabel(name)
    for ax in axes:
        ax.set_xticks(np.arange(len(blocks)) + width * (len(groups) - 1) / 2)
        ax.set_xticklabels(blocks)
        ax.grid(alpha=0.3, axis="y")
    axes[0].set_title(title)
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return out
