"""Hand-made runs and records for selection and report tests (no training)."""

from __future__ import annotations

from typing import Any

from bench import records
from bench.selection import Run


def record(step: int, accs: dict[str, tuple[float | None, float | None]]) -> dict[str, Any]:
    """A record whose eval gives each environment ``(in acc, out acc)``."""
    return {
        "step": step,
        "eval": {
            env: {"in": {"acc": a, "n": 80}, "out": {"acc": b, "n": 0 if b is None else 20}}
            for env, (a, b) in accs.items()
        },
    }


def run(
    algorithm: str,
    test_envs: tuple[str, ...],
    trial: int,
    hseed: int,
    recs: list[dict[str, Any]],
    status: str = "ok",
    dataset: str = "toy",
    **spec: Any,
) -> Run:
    full = {
        "algorithm": algorithm,
        "dataset": dataset,
        "test_envs": list(test_envs),
        "trial_seed": trial,
        "hparams_seed": hseed,
        "size": "tiny",
        "steps": 10,
        "eval_every": 5,
        "holdout_fraction": 0.2,
        "dataset_version": 1,
        "identity": records.IDENTITY,
        **spec,
    }
    run_id = f"{algorithm}-{dataset}-{'+'.join(test_envs)}-t{trial}-h{hseed}"
    return Run(
        run_id,
        full,
        {"lr": 10.0 ** -(hseed + 2)},
        tuple(recs),
        status,
        command=f"python -m bench run --algorithms {algorithm}",  # old syntax: boards say `sweep`
        git="abc123",
    )


def write_run_dir(output_dir, r: Run) -> None:
    """Lay ``r`` out as a run directory, as the runner would (``done`` only for finished runs)."""
    d = records.run_dir(output_dir, r.run_id)
    d.mkdir(parents=True)
    records.write_json(
        d / records.SPEC,
        {
            "spec": dict(r.spec),
            "run_id": r.run_id,
            "hparams": dict(r.hparams),
            "command": r.command,
            "meta": {"git": r.git},
        },
    )
    for rec in r.records:
        records.append_record(d / records.RESULTS, {**rec, "run_id": r.run_id})
    if r.status != "partial":
        records.write_json(
            d / records.DONE,
            {"status": r.status, "step": r.records[-1]["step"] if r.records else 0, "wall_s": 1.0},
        )
