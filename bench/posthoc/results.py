"""Where post-hoc results live and how they become board rows.

A result is one JSON file: its kind (``tta``, ``ensemble``, ``diwa``), configuration, the
runs it was made from (with the step of the weights used) and records of a run's shape.
Its id hashes all of that, so a change of configuration or of a base run is a new result.
Like a run's ``spec.json`` it also records how it was made (``provenance``): the command,
the git commit (``-dirty`` with local changes), library versions, host and CPU, the base
runs' seeds and the time, so a board can print its commit and its command in run order.

- test-time adaptation: ``<output>/runs/<run_id>/posthoc/<id>.json`` (beside its run);
- ensembles and weight averages of several runs: ``<output>/combined/<id>.json``;
- weight averaging during training: ``<output>/runs/<run_id>/averaged.jsonl``, written by
  the run itself (``bench/posthoc/averaging.py``).

``derived_runs`` turns each into a ``selection.Run`` whose algorithm is the row label
(``erm + t3a``, ``ensemble(erm)``), so selection rules and statistics apply unchanged.
"""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path
from typing import Any, Mapping, Sequence

from bench import records
from bench.errors import UserError
from bench.execution import cpu_model
from bench.seeding import canonical_json
from bench.selection import Run

POSTHOC, COMBINED, AVERAGED = "posthoc", "combined", "averaged.jsonl"


def result_id(kind: str, config: Mapping[str, Any], bases: Sequence[tuple[str, int]]) -> str:
    text = canonical_json({"kind": kind, "config": dict(config), "bases": sorted(bases)})
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def provenance(seeds: Mapping[str, Any]) -> dict[str, Any]:
    """How a result was made, beside what it is: code, libraries, machine, seeds, time.

    Post-hoc methods run on the CPU; ``meta`` has the keys of a run's (``records.provenance``).
    """
    return {
        "meta": {**records.provenance("cpu"), "cpu": cpu_model()},
        "seeds": dict(seeds),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }


def base_seeds(specs: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, int]]:
    """Each base run's seeds (run id -> trial and hparams seed)."""
    return {
        rid: {"trial_seed": s["trial_seed"], "hparams_seed": s["hparams_seed"]}
        for rid, s in sorted(specs.items())
    }


def make_result(
    kind: str,
    config: Mapping[str, Any],
    row: str,
    bases: Sequence[tuple[str, int]],
    base_spec: Mapping[str, Any],
    records_: Sequence[Mapping[str, Any]],
    command: str,
    seeds: Mapping[str, Any],
) -> dict[str, Any]:
    """A result; ``base_spec`` is the spec its rows inherit (dataset, test envs, trial).

    Its records carry the result's own ``meta`` (a copied base record would name the base
    run's commit); ``seeds`` are every seed it depends on (``base_seeds`` and its own).
    """
    rid = result_id(kind, config, bases)
    made = provenance(seeds)
    return {
        "kind": kind,
        "config": dict(config),
        "row": row,
        "bases": [list(b) for b in sorted(bases)],
        "id": rid,
        "spec": dict(base_spec),
        "records": [{**r, "run_id": rid, "meta": made["meta"]} for r in records_],
        "command": command,
        **made,
    }


def write_result(directory: Path, result: Mapping[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{result['id']}.json"
    records.write_json(path, result)
    return path


def read_result(path: Path) -> dict[str, Any]:
    try:
        result = records.read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise records.DamagedRun(f"{path}: unreadable ({exc})") from None
    if not isinstance(result, dict) or not {"kind", "row", "bases", "spec", "records"} <= set(
        result
    ):
        raise records.DamagedRun(f"{path}: not a post-hoc result")
    return result


def result_files(output_dir: str | Path) -> list[Path]:
    root = Path(output_dir)
    return sorted((root / "runs").glob(f"*/{POSTHOC}/*.json")) + sorted(
        (root / COMBINED).glob("*.json")
    )


def label(base: str, method: str, config: Mapping[str, Any], defaults: Mapping[str, Any]) -> str:
    """``erm + swad``, with the parameters that differ from their defaults in brackets."""
    changed = [
        f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in sorted(config.items())
        if k in defaults and v != defaults[k]
    ]
    return f"{base} + {method}" + (f" [{', '.join(changed)}]" if changed else "")


def strip_averaging(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec without its averaging option: the raw model of an averaged run is the plain run."""
    return {k: v for k, v in spec.items() if k != "averaging"}


def derived_runs(output_dir: str | Path, runs: Sequence[Run]) -> list[Run]:
    """Board rows from post-hoc results, given the output directory's (checked) runs.

    A result counts only while every base run is finished ``ok`` at the step it used;
    otherwise it is a damaged run of its row (the base was retrained or damaged).
    """
    base_steps = {r.run_id: r.records[-1]["step"] for r in runs if r.status == "ok" and r.records}
    out = []
    for path in result_files(output_dir):
        try:
            result = read_result(path)
        except records.DamagedRun as exc:
            out.append(Run(path.stem, {}, {}, (), "damaged", damage=str(exc)))
            continue
        stale = [b for b, step in result["bases"] if base_steps.get(b) != step]
        spec = {**result["spec"], "algorithm": result["row"]}
        if stale:
            why = f"{path}: base run(s) {', '.join(stale)} changed or unfinished; re-run it"
            out.append(Run(result["id"], spec, {}, (), "damaged", damage=why))
            continue
        found = tuple(result["records"])
        git = result.get("meta", {}).get("git")  # None in results written before provenance
        out.append(
            Run(result["id"], spec, result["config"], found, "ok", result.get("command", ""), git)
        )
    return out


def posthoc_commands(output_dir: str | Path) -> list[str]:
    """The commands of the readable results of ``output_dir``, in the order they were run
    (their recorded time; results written before it was recorded first, by command)."""
    made = []
    for path in result_files(output_dir):
        try:
            result = read_result(path)
        except records.DamagedRun:
            continue
        if result.get("command"):
            made.append((result.get("created", ""), result["command"]))
    return list(dict.fromkeys(command for _, command in sorted(made)))


def require_finished(runs: Sequence[Run], what: str) -> None:
    bad = [r.run_id for r in runs if r.status != "ok"]
    if bad:
        raise UserError(f"{what} needs finished runs; not finished: {', '.join(bad)}")
