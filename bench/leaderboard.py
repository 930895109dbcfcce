"""The published leaderboard: markdown (tables, reference rows, chosen hparams, commands) and
figures.

Everything in the markdown is a function of the runs plus the injected ``commit`` and
``command``, so a golden file can pin it and a re-run reproduces it byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench import interpret, report_files
from bench import report as rp
from bench import report_diagnostics as diagnostics
from bench.commands import current_syntax
from bench.protocol import render_card
from bench.references import published_rows
from bench.selection import RULES, Run


def _hp_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _protocol(runs: Sequence[Run]) -> str:
    """The budget of a dataset's runs, stated plainly."""
    spec = runs[0].spec

    def count(key: str) -> int:
        return len({r.spec[key] for r in runs})

    envs = sorted({",".join(r.spec["test_envs"]) for r in runs})
    return (
        f"{_status_counts(runs)}; "
        f"algorithms: {', '.join(sorted({r.spec['algorithm'] for r in runs}))}; test "
        f"envs: {'; '.join(envs)}; "
        f"{count('hparams_seed')} hparams sample(s), {count('trial_seed')} trial(s); size "
        f"{spec['size']}, "
        f"{spec['steps']} steps, eval every {spec.get('eval_every', '?')}, holdout "
        f"{spec['holdout_fraction']}."
    )


def _merge_tasks(cards: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The first card, its task naming every task of the section when DG and UDA runs share it."""
    tasks = sorted({c["task"] for c in cards if "task" in c})  # "DG" first
    if len(tasks) < 2:
        return cards[0]
    return {**cards[0], "task": " and ".join(tasks) + " (UDA rows are marked + uda)"}


def _status_counts(runs: Sequence[Run]) -> str:
    counts = {s: sum(r.status == s for r in runs) for s in ("ok", "diverged", "partial", "damaged")}
    return f"{len(runs)} runs ({', '.join(f'{n} {s}' for s, n in counts.items())})"


def _hparams_table(report: rp.Report, dataset: str, rule: str) -> str:
    """Per selected cell trial: the run and the hparams that vary across that algorithm's runs."""
    chosen = [s for s in report.selected[rule] if s.dataset == dataset and s.acc is not None]
    varying: dict[str, list[str]] = {}
    for s in chosen:
        if s.algorithm not in varying:
            values = [
                r.hparams
                for r in report.dataset_runs(dataset)
                if report.rows[r.run_id] == s.algorithm
            ]
            varying[s.algorithm] = sorted(
                k for k in values[0] if len({repr(v.get(k)) for v in values}) > 1
            )
    rows = [
        [
            s.algorithm,
            s.test_env,
            s.trial_seed,
            s.hparams_seed,
            s.step,
            s.run_id,
            ", ".join(f"{k}={_hp_value(s.hparams[k])}" for k in varying[s.algorithm]) or "defaults",
        ]
        for s in chosen
    ]
    table = rp.Table(
        "",
        ["algorithm", "test env", "trial", "hparams seed", "step", "run", "searched hparams"],
        rows,
    ).render("markdown")
    return (
        f"<details><summary>Selected hyperparameters ({rule})</summary>\n\n{table}\n\nFull "
        "values: `selected.json`.\n</details>"
    )


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_").lower()


DIAGNOSTIC_NOTE = (
    "Mean pairwise cosine similarity of the per-environment gradients of the classifier "
    "head (1 = the training "
    "environments pull the same way; the quantity Fish and IDGM are designed to raise)."
)


def markdown(
    report: rp.Report,
    commit: str | None,
    command: str,
    title: str = "Leaderboard",
    figures: Mapping[str, str] | None = None,
    commands: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> str:
    """The whole leaderboard page; ``figures`` maps a dataset label to a PNG file name next to
    it. ``commands``: the commands that made the runs, in the order they must be run (default:
    the runs' commands, sorted; they are independent of each other). ``notes``: paragraphs
    printed under the legend (caveats of the caller's rows)."""
    figures = figures or {}
    if commands is None:
        run_commands = sorted({current_syntax(r.command) for r in report.runs if r.command})
    else:
        run_commands = list(dict.fromkeys(current_syntax(c) for c in commands))
    run_commits = sorted({r.git or "unknown" for r in report.runs})
    out = [
        f"# {title}",
        "",
        f"{_status_counts(report.runs + [r for r in report.damaged if not r.spec])}. "
        f"Written at git commit `{commit or 'unknown'}`; runs trained at "
        f"{', '.join(f'`{c}`' for c in run_commits)}.",
        "",
        "## Regenerate every number",
        "",
        "Train, from the directory the paths are relative to (re-running a command "
        "resumes it; finished runs are skipped):",
        "",
        "```",
        *(run_commands or ["(runs carry no command)"]),
        "```",
        "",
        "Tables and figures:",
        "",
        "```",
        command,
        "```",
        "",
        rp.legend("std", False),
        "Rows marked *(published: source)* are numbers from papers, for reference; they "
        "were not run here.",
        *(["", *notes] if notes else []),
        *(["", *rp.damage_notes(report)] if report.damaged else []),
    ]
    for rule in report.rules:
        summary = rp.summary_table(report, rule)
        if summary.headers[1:-1]:
            out += ["", f"## Summary — {rule}: {RULES[rule][0]}", "", summary.render("markdown")]
    for dataset in report.datasets:
        runs = report.dataset_runs(dataset)
        out += ["", f"## {dataset}", "", _protocol(runs)]
        cards = [
            r.protocol for r in sorted(runs, key=lambda r: r.spec["hparams_seed"]) if r.protocol
        ]
        if cards:
            out += ["", render_card(_merge_tasks(cards))]
        for rule in report.rules:
            if not report.has_values(dataset, rule):
                out += ["", f"### {rule}", "", f"No values: {_empty_reason(report, dataset, rule)}"]
                continue
            table = rp.dataset_table(report, dataset, rule)
            published, differ = published_rows(
                dataset, rule, table.headers, report.dataset_runs(dataset)
            )
            rows = table.rows + published
            out += [
                "",
                f"### {rule}: {RULES[rule][0]}",
                "",
                rp.Table(table.title, table.headers, rows).render("markdown"),
                "",
            ]
            notes = table.notes[2:] + differ
            out += notes + ([""] if notes else [])
            meaning = interpret.lines(report, dataset, rule)
            out += (
                [f"**What it means.** {' '.join(_sentence(m) for m in meaning)}", ""]
                if meaning
                else []
            )
            out.append(_hparams_table(report, dataset, rule))
        if dataset in figures:
            out += ["", f"![{dataset}: train vs test accuracy]({figures[dataset]})"]
        diagnostic = diagnostics.diagnostic_table(report, dataset, report.rules[0])
        if diagnostic is not None:
            out += [
                "",
                f"### Training diagnostic: `{diagnostics.DIAGNOSTIC}`",
                "",
                DIAGNOSTIC_NOTE,
                "",
                diagnostic.render("markdown"),
                "",
                *diagnostic.notes,
            ]
            if f"{diagnostics.DIAGNOSTIC}:{dataset}" in figures:
                out += [
                    "",
                    f"![{dataset}: {diagnostics.DIAGNOSTIC} over "
                    f"training]({figures[f'{diagnostics.DIAGNOSTIC}:{dataset}']})",
                ]
    if "domains" in figures:
        out += [
            "",
            "## Accuracy vs number of training domains",
            "",
            f"![accuracy vs number of domains]({figures['domains']})",
        ]
    return "\n".join(out) + "\n"


def _sentence(line: str) -> str:
    line = line[0].upper() + line[1:]
    return line if line.endswith(".") else line + "."


def _empty_reason(report: rp.Report, dataset: str, rule: str) -> str:
    reasons = sorted({s.reason for s in report.selected[rule] if s.dataset == dataset})
    return "; ".join(reasons) or "no runs"


def _save(fig: Any, ax: Any, path: Path, title: str | None = None) -> None:
    """Legend, optional title, then a PNG without the matplotlib version in it (stable bytes across
    machines)."""
    import matplotlib.pyplot as plt

    if title:
        ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110, metadata={"Software": None})
    plt.close(fig)


def plot(report: rp.Report, out_dir: Path, rule: str) -> dict[str, str]:
    """Train vs test accuracy per algorithm for each dataset, and accuracy vs number of domains for
    ``*_n<N>`` families."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    files: dict[str, str] = {}
    for dataset in report.datasets:
        chosen = [s for s in report.selected[rule] if s.dataset == dataset and s.acc is not None]
        if not chosen:
            continue
        algorithms = report.algorithms(dataset)
        fig, ax = plt.subplots(figsize=(2.5 + 0.9 * len(algorithms), 3.4))
        x = np.arange(len(algorithms))
        for offset, key, label in (
            (-0.2, "train_acc", "train envs"),
            (0.2, "acc", "test env (in)"),
        ):
            vals = [
                [
                    100 * getattr(s, key)
                    for s in chosen
                    if s.algorithm == a and getattr(s, key) is not None
                ]
                for a in algorithms
            ]
            ax.bar(
                x + offset,
                [np.mean(v) if v else 0 for v in vals],
                0.4,
                yerr=[np.std(v, ddof=1) if len(v) > 1 else 0 for v in vals],
                label=label,
                capsize=3,
            )
        ax.set_xticks(x, algorithms, rotation=30)
        ax.set_ylabel("accuracy (%), mean ± std")
        name = f"{_slug(dataset)}_{rule}_train_test.png"
        _save(fig, ax, out_dir / name, f"{dataset} ({rule})")
        files[dataset] = name
        curves = diagnostics.diagnostic_curves(report, dataset, rule)
        if curves:
            fig, ax = plt.subplots(figsize=(5, 3.2))
            for a in report.algorithms(dataset):
                if a in curves:
                    steps = sorted(curves[a])
                    mean = np.array([np.mean(curves[a][s]) for s in steps])
                    std = np.array(
                        [
                            np.std(curves[a][s], ddof=1) if len(curves[a][s]) > 1 else 0.0
                            for s in steps
                        ]
                    )
                    ax.plot(steps, mean, marker=".", label=a)
                    ax.fill_between(steps, mean - std, mean + std, alpha=0.2)
            ax.set_xlabel("step")
            ax.set_ylabel(f"{diagnostics.DIAGNOSTIC}, mean ± std")
            name = f"{_slug(dataset)}_{rule}_{diagnostics.DIAGNOSTIC}.png"
            _save(fig, ax, out_dir / name, f"{dataset} ({rule})")
            files[f"{diagnostics.DIAGNOSTIC}:{dataset}"] = name
    families: dict[str, list[tuple[int, str]]] = {}
    for dataset in report.datasets:
        match = re.fullmatch(r"(.+)_n(\d+)", dataset)
        if match and report.has_values(dataset, rule):
            families.setdefault(match.group(1), []).append((int(match.group(2)), dataset))
    families = {k: sorted(v) for k, v in families.items() if len(v) > 1}
    if families:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        for family, members in families.items():
            for a in report.algorithms():
                points = [(n, rp.cells(report, d, rule)) for n, d in members]
                points = [
                    (n, next(iter(c.values()))) if "Avg" not in c else (n, c["Avg"])
                    for n, c in points
                ]
                points = [
                    (n, col[a].summary()["mean"]) for n, col in points if a in col and col[a].n
                ]
                if points:
                    ax.plot(
                        [p[0] for p in points],
                        [100 * p[1] for p in points],
                        marker="o",
                        label=f"{a} ({family})",
                    )
        ax.set_xlabel("number of training domains")
        ax.set_ylabel("test accuracy (%)")
        _save(fig, ax, out_dir / f"domains_{rule}.png")
        files["domains"] = f"domains_{rule}.png"
    return files


def write(
    report: rp.Report,
    out_dir: str | Path,
    commit: str | None,
    command: str,
    title: str = "Leaderboard",
    figures: bool = True,
    commands: Sequence[str] | None = None,
    notes: Sequence[str] = (),
) -> Path:
    """Write README.md, selected.csv/json and the figures into ``out_dir``; return the markdown
    path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plotted = plot(report, out_dir, report.rules[0]) if figures else {}
    page = out_dir / "README.md"
    page.write_text(markdown(report, commit, command, title, plotted, commands, notes))
    report_files.write_selected(report, out_dir / "selected.csv", out_dir / "selected.json")
    return page
