"""Model selection rules (DomainBed semantics), each a pure function of runs and their records.

A *cell trial* is one (dataset, algorithm, test env, trial seed); its candidates are the
finished runs of that trial holding out that environment (with the protocol's other test
environments, if it declares several), one per hparams sample. Runs that hold out one
environment more are leave-one-out pair runs, used only by ``loo``. A rule picks one
(run, checkpoint) per cell trial and reports the test environment's ``in`` accuracy
there (DomainBed's convention):

- ``train_val``: per run the checkpoint with the best mean ``out`` accuracy over the
  training environments; then the hparams sample with the best such validation.
- ``oracle``: per run the last checkpoint, scored by the test environment's ``out``
  accuracy; the best hparams sample by that score (no early stopping).
- ``loo``: leave-one-domain-out. Per step, validation is the mean over the training
  environments ``v`` of the ``in`` accuracy of ``v`` in the run holding out (test, v);
  best step, then best hparams sample. A missing pair run leaves the trial missing.
- ``last``: no selection: the default-hparams run (``hparams_seed`` 0) at its last
  checkpoint, for protocols that fix hyperparameters (e.g. the IRM paper's).
- ``val_env``: a declared validation environment (the dataset's ``VALIDATION_ENV``,
  held out like a test environment, e.g. CDSprites' colour-scrambled ``val`` as in the
  Fish code): per run the checkpoint with the best accuracy over that whole
  environment, then the best hparams sample; the validation environment itself gets
  no value.

Diverged, unfinished and damaged runs are never candidates; they are counted in each
result so tables can show them. Runs that differ in anything but their seeds are never
pooled: they get separate dataset labels or algorithm rows (``dataset_labels``,
``algorithm_labels``), so one cell holds one configuration and, per trial, at most one
run per hparams seed. Ties go to the lowest hparams seed, then the earliest checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

from bench.errors import UserError


@dataclass(frozen=True)
class Run:
    """One run directory as selection sees it; ``status`` is ok, diverged, partial or damaged (never
    a candidate)."""

    run_id: str
    spec: Mapping[str, Any]
    hparams: Mapping[str, Any]
    records: tuple[Mapping[str, Any], ...]
    status: str
    command: str = ""
    git: str | None = None
    damage: str = ""  # why a damaged run cannot be used
    protocol: Mapping[str, Any] = field(
        default_factory=dict
    )  # the protocol card recorded in spec.json


@dataclass(frozen=True)
class Selected:
    """The outcome for one cell trial: a value with where it came from, or ``acc=None`` and why."""

    dataset: str
    algorithm: str
    test_env: str
    trial_seed: int
    acc: float | None
    val: float | None = None
    train_acc: float | None = None
    run_id: str | None = None
    step: int | None = None
    hparams_seed: int | None = None
    hparams: Mapping[str, Any] = field(default_factory=dict)
    n_runs: int = 0
    n_diverged: int = 0
    n_partial: int = 0
    n_damaged: int = 0
    reason: str = ""


@dataclass(frozen=True)
class _Pick:
    run: Run
    record: Mapping[str, Any]
    val: float | None


def _acc(record: Mapping[str, Any], env: str, part: str) -> float | None:
    """The dataset's primary metric (recorded with each record; accuracy by default) of one
    split."""
    return record["eval"][env][part].get(record.get("metric", "acc"))


def _mean(values: list[float | None]) -> float | None:
    if not values or any(v is None for v in values):
        return None
    return sum(values) / len(values)  # type: ignore[arg-type]


def _train_envs(run: Run, record: Mapping[str, Any]) -> list[str]:
    return [env for env in record["eval"] if env not in run.spec["test_envs"]]


def _best(picks: list[_Pick]) -> _Pick | None:
    """Highest ``val``; ties keep the earliest (picks arrive sorted by hparams seed, then step)."""
    best = None
    for pick in picks:
        if pick.val is not None and (best is None or pick.val > best.val):
            best = pick
    return best


def _pick_train_val(run: Run, test_env: str, _: Callable) -> _Pick | None:
    return _best(
        [
            _Pick(run, r, _mean([_acc(r, e, "out") for e in _train_envs(run, r)]))
            for r in run.records
        ]
    )


def _pick_oracle(run: Run, test_env: str, _: Callable) -> _Pick | None:
    last = run.records[-1]
    return _Pick(run, last, _acc(last, test_env, "out"))


def _pick_last(run: Run, test_env: str, _: Callable) -> _Pick | None:
    return _Pick(run, run.records[-1], 0.0) if run.spec["hparams_seed"] == 0 else None


def validation_env(dataset: str) -> str | None:
    """The environment a dataset declares for model selection (``VALIDATION_ENV``), if any."""
    # lazy: selection loads with the CLI (rule names), and the registries import torch
    from bench.datasets import DATASETS

    return getattr(DATASETS.get(dataset), "VALIDATION_ENV", None) if dataset in DATASETS else None


def _whole_env_acc(record: Mapping[str, Any], env: str) -> float | None:
    parts = [record["eval"][env][p] for p in ("in", "out")]
    parts = [p for p in parts if p.get("acc") is not None and p.get("n")]
    return sum(p["acc"] * p["n"] for p in parts) / sum(p["n"] for p in parts) if parts else None


def _pick_val_env(run: Run, test_env: str, _: Callable) -> _Pick | None:
    val = validation_env(run.spec["dataset"])
    if val is None or val == test_env or val not in run.spec["test_envs"]:
        return None
    return _best([_Pick(run, r, _whole_env_acc(r, val)) for r in run.records])


def _pick_loo(run: Run, test_env: str, pair_run: Callable[[Run, str], Run | None]) -> _Pick | None:
    others = _train_envs(run, run.records[0])
    pairs = {v: pair_run(run, v) for v in others}
    if any(p is None for p in pairs.values()):
        return None
    by_step = {
        v: {r["step"]: r for r in p.records}  # type: ignore[union-attr]
        for v, p in pairs.items()
    }
    picks = []
    for record in run.records:
        val_records = [by_step[v].get(record["step"]) for v in others]
        if all(r is not None for r in val_records):
            picks.append(
                _Pick(run, record, _mean([_acc(r, v, "in") for r, v in zip(val_records, others)]))
            )  # type: ignore[index]
    return _best(picks)


RULES: dict[str, tuple[str, Callable[[Run, str, Callable], _Pick | None]]] = {
    "train_val": ("training-domain validation", _pick_train_val),
    "loo": ("leave-one-domain-out cross-validation", _pick_loo),
    "oracle": ("test-domain validation (oracle), last checkpoint", _pick_oracle),
    "last": ("default hparams, last checkpoint (no selection)", _pick_last),
    "val_env": ("declared validation environment (the Fish code's rule)", _pick_val_env),
}


def rule_names(text: str | Sequence[str]) -> list[str]:
    """Validated rule names from ``"train_val,oracle"`` or a list; unknown names raise UserError."""
    names = [n.strip() for n in text.split(",")] if isinstance(text, str) else list(text)
    unknown = [n for n in names if n not in RULES]
    if unknown or not names:
        raise UserError(
            f"unknown selection rule(s) {', '.join(unknown) or '(none)'}; rules: {', '.join(RULES)}"
        )
    return names


# A cell pools runs that differ only in seeds (and the hparams drawn from them). Runs that
# differ in anything else are labelled apart: protocol fields split a dataset's table,
# configuration fields split an algorithm's row (e.g. ``erm [lr=1e-05]``).
_PROTOCOL_KEYS = (
    "size",
    "steps",
    "eval_every",
    "holdout_fraction",
    "dataset_version",
    "precision",
    "data",
)
_CONFIG_KEYS = ("algorithm_version", "space", "code", "averaging")


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _differing(specs: Sequence[Mapping[str, Any]], keys: Sequence[str]) -> list[str]:
    return [k for k in keys if len({_canon(s.get(k)) for s in specs}) > 1]


def _show(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def dataset_labels(runs: Sequence[Run]) -> dict[str, str]:
    """run_id -> dataset label; a dataset run under several protocols gets the differing fields
    spelled out."""
    by_name: dict[str, list[Run]] = {}
    for run in runs:
        by_name.setdefault(run.spec["dataset"], []).append(run)
    labels = {}
    for name, members in by_name.items():
        keys = _differing([r.spec for r in members], _PROTOCOL_KEYS)
        for run in members:
            labels[run.run_id] = name + (
                " [" + ", ".join(f"{k}={_show(run.spec.get(k))}" for k in keys) + "]"
                if keys
                else ""
            )
    return labels


def task_name(spec: Mapping[str, Any]) -> str:
    """The algorithm, marked ``+ uda F`` in domain adaptation, so DG and UDA rows never pool but
    sit side by side in one table."""
    fraction = spec.get("uda_fraction", 0.0)
    return spec["algorithm"] + (f" + uda {fraction:g}" if fraction else "")


def algorithm_labels(runs: Sequence[Run], datasets: Mapping[str, str]) -> dict[str, str]:
    """run_id -> row label; within one dataset label, an algorithm run in several configurations
    gets one row each.

    The label spells the run's hparam overrides and any other configuration field that
    differs (algorithm version, search-space digest, plugin code digest), and ``+ uda F`` for
    domain-adaptation runs.
    """
    groups: dict[tuple[str, str], list[Run]] = {}
    for run in runs:
        groups.setdefault((datasets[run.run_id], task_name(run.spec)), []).append(run)
    labels = {}
    for (_, algorithm), members in groups.items():
        configs = {
            _canon([r.spec.get("overrides", {}), *(r.spec.get(k) for k in _CONFIG_KEYS)])
            for r in members
        }
        keys = _differing([r.spec for r in members], _CONFIG_KEYS)
        for run in members:
            parts = (
                [f"{k}={_show(v)}" for k, v in sorted(run.spec.get("overrides", {}).items())]
                if len(configs) > 1
                else []
            )
            parts += [f"{k}={_show(run.spec.get(k))}" for k in keys]
            labels[run.run_id] = algorithm + (f" [{', '.join(parts)}]" if parts else "")
    return labels


def split_pair_runs(runs: Sequence[Run]) -> tuple[list[Run], list[Run]]:
    """(cell runs, leave-one-out pair runs). A pair run holds out one environment more than another
    run of the same dataset protocol, algorithm and trial; every other run is a cell run, and
    each of its test environments is a cell (e.g. CDSprites' ``val`` and ``test``)."""
    labels = dataset_labels(runs)
    rows = algorithm_labels(runs, labels)
    held: dict[tuple, set] = {}
    for run in runs:
        held.setdefault((labels[run.run_id], rows[run.run_id], run.spec["trial_seed"]), set()).add(
            frozenset(run.spec["test_envs"])
        )
    cells, pairs = [], []
    for run in runs:
        envs = frozenset(run.spec["test_envs"])
        siblings = held[(labels[run.run_id], rows[run.run_id], run.spec["trial_seed"])]
        (pairs if any(len(o) == len(envs) - 1 and o < envs for o in siblings) else cells).append(
            run
        )
    return cells, pairs


def select(runs: Sequence[Run], rule: str) -> list[Selected]:
    """One Selected per cell trial (dataset, algorithm, test env, trial) in ``runs``, sorted."""
    pick = RULES[rule_names([rule])[0]][1]
    labels = dataset_labels(runs)
    rows = algorithm_labels(runs, labels)
    cell_runs, pair_runs = split_pair_runs(runs)
    groups: dict[tuple, list[Run]] = {}
    for run in cell_runs:
        for env in run.spec["test_envs"]:
            groups.setdefault(
                (labels[run.run_id], rows[run.run_id], env, run.spec["trial_seed"]), []
            ).append(run)
    finished_pairs = {
        _pair_key(labels, rows, r, r.spec["test_envs"]): r
        for r in pair_runs
        if r.status == "ok" and r.records
    }

    def pair_run(run: Run, other: str) -> Run | None:
        return finished_pairs.get(_pair_key(labels, rows, run, [*run.spec["test_envs"], other]))

    out = []
    for (label, algorithm, test_env, trial), members in sorted(groups.items()):
        members = sorted(members, key=lambda r: r.spec["hparams_seed"])
        finished = [r for r in members if r.status == "ok" and r.records]
        counts = {
            "n_runs": len(members),
            **{
                f"n_{s}": sum(r.status == s for r in members)
                for s in ("diverged", "partial", "damaged")
            },
        }
        best = _best([p for p in (pick(r, test_env, pair_run) for r in finished) if p is not None])
        head = dict(
            dataset=label, algorithm=algorithm, test_env=test_env, trial_seed=trial, **counts
        )
        if best is None:
            out.append(
                Selected(acc=None, reason=_why_missing(rule, members, finished, counts), **head)
            )
            continue
        record = best.record
        out.append(
            Selected(
                acc=_acc(record, test_env, "in"),
                val=None if rule == "last" else best.val,
                train_acc=_train_acc(best.run, record),
                run_id=best.run.run_id,
                step=record["step"],
                hparams_seed=best.run.spec["hparams_seed"],
                hparams=dict(best.run.hparams),
                **head,
            )
        )
    return out


def _train_acc(run: Run, record: Mapping[str, Any]) -> float | None:
    """Mean accuracy over the training envs: their ``in`` splits, or ``out`` where ``in`` was not
    evaluated."""
    envs = _train_envs(run, record)
    return _mean([_acc(record, e, "in") for e in envs]) or _mean(
        [_acc(record, e, "out") for e in envs]
    )


def _pair_key(
    labels: Mapping[str, str], rows: Mapping[str, str], run: Run, test_envs: Sequence[str]
) -> tuple:
    s = run.spec
    return (
        labels[run.run_id],
        rows[run.run_id],
        s["trial_seed"],
        s["hparams_seed"],
        frozenset(test_envs),
    )


def _why_missing(
    rule: str, members: list[Run], finished: list[Run], counts: Mapping[str, int]
) -> str:
    if not finished:
        parts = [
            f"{counts[k]} {k[2:]}" for k in ("n_diverged", "n_partial", "n_damaged") if counts[k]
        ]
        return "no finished run" + (f" ({', '.join(parts)})" if parts else "")
    if rule == "last":
        return "no default-hparams run (hparams_seed 0)"
    if rule == "loo":
        return "missing leave-one-out pair run(s) (sweep with --test-envs pairs)"
    if rule == "val_env":
        return "no declared validation environment held out by these runs (or this is it)"
    return "no validation accuracy (empty out splits: holdout fraction 0)"
