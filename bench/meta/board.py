"""Meta-learning boards: method x (way, shot) tables and accuracy against shots.

Pure functions of the runs' records. Per (method, dataset, way, shot, trial) the
hyperparameter sample with the best meta-validation accuracy is selected (each run already
picked its checkpoint on meta-validation episodes); its meta-test result is reported two
ways: the field's episode-level ``mean ± 95% CI`` (1.96 std / sqrt(episodes), averaged over
trials) and bench's trial-level ``mean ± std (n)`` (ddof=1). Each dataset states the budget
its runs had next to the package default, and the page ends with the commands that trained
the runs and the commits of the code, so a reduced CPU budget is never read as the standard
protocol and every number can be made again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np
from tabulate import tabulate

from bench import records
from bench.errors import UserError
from bench.meta.base import METHODS
from bench.meta.few_shot import FEW_SHOT_DATASETS
from bench.meta.runner import RUNS, test_record
from bench.meta.spec import TEST_EPISODES, VAL_EPISODES
from bench.multitask.provenance import regenerate

KEY_FIELDS = ("dataset", "way", "shot", "method")
# Settings that must agree within one cell; differing values would mix protocols.
PROTOCOL_FIELDS = ("query", "steps", "eval_every", "val_episodes", "test_episodes", "size")


@dataclass(frozen=True)
class Result:
    """The selected meta-test result of one (method, dataset, way, shot, trial)."""

    method: str
    dataset: str
    way: int
    shot: int
    trial: int
    acc: float
    ci95: float
    val_acc: float
    hparams_seed: int


def collect(output_dir: str | Path) -> list[dict[str, Any]]:
    """The test record of every finished run under ``output_dir/meta_runs``, with the command
    that trained it (from its ``spec.json``)."""
    root = Path(output_dir) / RUNS
    if not root.is_dir():
        raise UserError(f"no meta-learning runs under {root}; run `python -m bench.meta run` first")
    found = []
    for directory in sorted(root.iterdir()):
        if (directory / records.DONE).exists():
            record = test_record(directory)
            if record is not None:
                info = records.read_json(directory / records.SPEC)
                found.append({**record, "command": info.get("command", "")})
    return found


def select(test_records: Iterable[dict[str, Any]]) -> list[Result]:
    """Best meta-validation accuracy over hparams samples, per (setting, trial)."""
    groups: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    protocols: dict[tuple, set] = defaultdict(set)
    for r in test_records:
        spec = r["spec"]
        groups[(*(spec[k] for k in KEY_FIELDS), spec["trial_seed"])].append(r)
        protocols[tuple(spec[k] for k in KEY_FIELDS)].add(tuple(spec[k] for k in PROTOCOL_FIELDS))
    for key, seen in protocols.items():
        if len(seen) > 1:
            raise UserError(
                f"runs of {'/'.join(map(str, key))} differ in {', '.join(PROTOCOL_FIELDS)}: "
                f"{sorted(seen)}; keep one protocol per output directory"
            )
    out = []
    for (dataset, way, shot, method, trial), runs in sorted(groups.items()):
        best = max(runs, key=lambda r: (r["val_acc"], -r["spec"]["hparams_seed"]))
        out.append(
            Result(
                method,
                dataset,
                way,
                shot,
                trial,
                best["eval"]["acc"],
                best["eval"]["ci95"],
                best["val_acc"],
                best["spec"]["hparams_seed"],
            )
        )
    return out


def _values(specs: list[dict[str, Any]], key: str) -> str:
    return "/".join(str(v) for v in sorted({s[key] for s in specs}))


def budget(test_records: Iterable[dict[str, Any]], dataset: str) -> str:
    """One line: the steps and episodes ``dataset``'s runs had, and the package default beside
    them when they differ (methods that do not meta-train, such as scratch, have no steps)."""
    specs = [r["spec"] for r in test_records if r["spec"]["dataset"] == dataset]
    trained = [s for s in specs if METHODS.get(s["method"]).META_TRAINS]
    cls = FEW_SHOT_DATASETS.get(dataset)
    ran = (
        f"{_values(trained, 'steps')} meta-training steps, meta-validation every "
        f"{_values(trained, 'eval_every')} steps on {_values(specs, 'val_episodes')} episodes, "
        if trained
        else ""
    )
    ran += (
        f"{_values(specs, 'test_episodes')} meta-test episodes, "
        f"{_values(specs, 'query')} queries per class"
    )
    default = (
        f"{cls.N_STEPS} steps, meta-validation every {cls.EVAL_EVERY} steps on {VAL_EPISODES} "
        f"episodes, {TEST_EPISODES} meta-test episodes"
    )
    used = {(s["steps"], s["eval_every"], s["val_episodes"]) for s in trained}
    used_test = {s["test_episodes"] for s in specs}
    if used <= {(cls.N_STEPS, cls.EVAL_EVERY, VAL_EPISODES)} and used_test == {TEST_EPISODES}:
        return f"Protocol: {ran} (the package default)."
    return (
        f"**CPU budget: {ran}.** The package default is {default}; {TEST_EPISODES} meta-test "
        "episodes is the literature's convention (Chen et al. 2019), and published MAML and "
        "ProtoNet results meta-train for tens of thousands of episodes. Read these numbers as "
        "this budget's, not as the methods' standard results."
    )


def _columns(results: list[Result]) -> list[tuple[int, int]]:
    return sorted({(r.way, r.shot) for r in results})


def _cell(results: list[Result], style: str) -> str:
    accs = np.array([r.acc for r in results]) * 100
    if style == "episodes":
        return f"{accs.mean():.1f} ± {np.mean([r.ci95 for r in results]) * 100:.1f}"
    std = f"{accs.std(ddof=1):.1f}" if len(accs) > 1 else "—"
    return f"{accs.mean():.1f} ± {std} ({len(accs)})"


def table(results: list[Result], dataset: str, style: str) -> str:
    """Markdown: a row per method, a column per (way, shot); ``style`` episodes or trials."""
    mine = [r for r in results if r.dataset == dataset]
    columns = _columns(mine)
    rows = []
    for method in sorted({r.method for r in mine}):
        row = [method]
        for way, shot in columns:
            cell = [r for r in mine if (r.method, r.way, r.shot) == (method, way, shot)]
            row.append(_cell(cell, style) if cell else "")
        rows.append(row)
    headers = ["method"] + [f"{w}-way {s}-shot" for w, s in columns]
    return tabulate(rows, headers, tablefmt="github", disable_numparse=True)


def plot(results: list[Result], path: str | Path) -> None:
    """Accuracy against shots, one panel per (dataset, way), error bars = std over trials."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(r.dataset, r.way) for r in results})
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (dataset, way) in zip(axes[0], panels):
        mine = [r for r in results if (r.dataset, r.way) == (dataset, way)]
        for method in sorted({r.method for r in mine}):
            shots = sorted({r.shot for r in mine if r.method == method})
            accs = [[r.acc * 100 for r in mine if (r.method, r.shot) == (method, s)] for s in shots]
            stds = [np.std(a, ddof=1) if len(a) > 1 else 0.0 for a in accs]
            ax.errorbar(shots, [np.mean(a) for a in accs], yerr=stds, marker="o", label=method)
        ax.set(title=f"{dataset}, {way}-way", xlabel="shots (support examples per class)")
        ax.set_xscale("log")
        ax.minorticks_off()
        ax.set_xticks(
            sorted({r.shot for r in mine}), [str(s) for s in sorted({r.shot for r in mine})]
        )
        ax.set_ylabel("meta-test query accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def board(
    results: list[Result],
    runs: Iterable[dict[str, Any]] = (),
    command: str = "",
    commit: str | None = None,
    figure: str | None = None,
) -> str:
    """The markdown board: per dataset its budget and both tables; with ``command`` (the board
    command as typed; ``commit``: the code's that runs it) the commands that trained ``runs``
    (the collected test records), their commits, and how to redraw the board."""
    runs = list(runs)
    parts = ["# Meta-learning board", ""]
    parts += [
        "Selection: per trial, the hparams sample and checkpoint with the best mean accuracy on "
        "meta-validation episodes. Metric: mean query accuracy (%) on the fixed meta-test "
        "episodes.",
        "",
    ]
    for dataset in sorted({r.dataset for r in results}):
        parts += [f"## {dataset}", ""]
        if runs:
            parts += [budget(runs, dataset), ""]
        parts += ["Episodes: mean ± 95% CI (1.96 std / sqrt(episodes)),"]
        parts += ["averaged over trials.", "", table(results, dataset, "episodes"), ""]
        parts += ["Trials: mean ± std (n trials).", "", table(results, dataset, "trials"), ""]
    if figure:
        parts += [f"![accuracy against shots]({Path(figure).name})", ""]
    if command:
        infos = [{"command": r.get("command", ""), "meta": r.get("meta")} for r in runs]
        parts += [*regenerate(infos, commit, command), ""]
    return "\n".join(parts)
