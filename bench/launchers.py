"""Launchers: send RunSpecs to workers and yield one Finished per run, in completion order.

Every launcher calls :func:`execute` on the worker; ``runner.run`` claims the run
directory with a file lock, so launchers (and machines sharing the output directory)
never train a run twice. The worker that trains a run appends a line to its
``trained.jsonl`` (host, pid, launcher, status): the audit trail of who trained what.

- ``local``: joblib's loky processes on this machine (``jobs``; torch threads per job
  = cores // jobs, so jobs x threads fill the machine without oversubscription). With
  ``vectorise``, runs of one shape are trained as one unit (``bench.vectorised``).
- ``dask``: a running Dask cluster by address (``dask.distributed.Client``).
- ``slurm``: submitit job arrays (``cluster="local"`` / ``"debug"`` run without Slurm).
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from bench import records, runner, vectorised
from bench.datasets import DATASETS
from bench.errors import UserError, reason
from bench.registry import import_plugins
from bench.spec import RunSpec, RuntimeOptions

TRAINED = "trained.jsonl"


@dataclass(frozen=True)
class Finished:
    """What a worker reports back: small and picklable."""

    run_id: str
    status: str  # ok | diverged | skipped (already done) | busy (another worker holds it)
    wall_s: float
    host: str


def execute(spec: RunSpec, options: RuntimeOptions, launcher: str = "local") -> Finished:
    """Run one spec on this worker; record the training in the run's ``trained.jsonl``."""
    _worker_setup(options)
    return _report(runner.run(spec, options), launcher)


def execute_unit(
    unit: Sequence[RunSpec], options: RuntimeOptions, launcher: str = "local"
) -> list[Finished]:
    """One run, or a group of runs trained as one vectorised unit (``bench.vectorised``)."""
    if len(unit) == 1:
        return [execute(unit[0], options, launcher)]
    _worker_setup(options)
    return [_report(outcome, launcher) for outcome in vectorised.run_group(unit, options)]


def _worker_setup(options: RuntimeOptions) -> None:
    """A fresh worker has seen neither the sweep's --import modules nor its ``folder:`` (etc.) data.

    Specs name those datasets without their location (see bench/datasets/user_data.py), so the
    worker rebuilds them, when first used, from the absolute names the sweep passed along.
    """
    import_plugins(options.imports)
    DATASETS.expect(options.extra.get("datasets", {}))


def _report(outcome: runner.RunOutcome, launcher: str) -> Finished:
    host = socket.gethostname()
    if outcome.status in ("ok", "diverged"):
        line = {
            "host": host,
            "pid": os.getpid(),
            "launcher": launcher,
            "status": outcome.status,
            "wall_s": outcome.wall_s,
        }
        records.append_record(outcome.run_dir / TRAINED, line)
    return Finished(outcome.run_id, outcome.status, outcome.wall_s, host)


def cores() -> int:
    """CPU cores this process may use (respects affinity masks and cgroup cpusets)."""
    return (
        len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    )


def plan_local(n_runs: int, jobs: int | None, threads: int | None) -> tuple[int, int]:
    """(processes, torch threads each): by default one single-threaded process per core.

    Small models gain nothing from intra-op threads, so parallel runs use cores best.
    """
    n_cores = cores()
    jobs = max(1, min(jobs or n_cores, n_runs or 1))
    return jobs, threads or max(1, n_cores // jobs)


def _for_workers(options: RuntimeOptions, threads: int | None) -> RuntimeOptions:
    """Absolute output path (workers may run elsewhere), no per-run step bars (the sweep has one),
    and the absolute names of ``folder:``/``csv:``/``hf:`` datasets (workers rebuild them)."""
    extra = {**options.extra, "datasets": DATASETS.sources()}
    output_dir = Path(options.output_dir).resolve()
    threads = threads or options.threads
    return dataclasses.replace(
        options, output_dir=output_dir, progress=False, threads=threads, extra=extra
    )


def local(
    specs: Sequence[RunSpec],
    options: RuntimeOptions,
    jobs: int | None = None,
    vectorise: bool = False,
    **_: Any,
) -> Iterator[Finished]:
    """joblib processes, one unit at a time each: a run, or with ``vectorise`` a group of runs
    of one shape trained together (``bench.vectorised``; records identical to one by one)."""
    n_jobs, threads = plan_local(len(specs), jobs, options.threads)
    work = vectorised.units(specs, n_jobs) if vectorise else [[spec] for spec in specs]
    n_jobs = min(n_jobs, len(work))
    opts = _for_workers(options, threads)
    if n_jobs <= 1:  # in this process: no worker start-up, and the dataset cache is shared
        for unit in work:
            yield from execute_unit(unit, opts, "local")
        return
    from joblib import Parallel, delayed

    parallel = Parallel(
        n_jobs=n_jobs,
        backend="loky",
        return_as="generator_unordered",
        batch_size=1,
        pre_dispatch="n_jobs",
    )
    for finished in parallel(delayed(execute_unit)(unit, opts, "local") for unit in work):
        yield from finished


def dask(
    specs: Sequence[RunSpec],
    options: RuntimeOptions,
    scheduler: str | None = None,
    connect_timeout_s: float = 5.0,
    **_: Any,
) -> Iterator[Finished]:
    """Submit every run to the cluster at ``scheduler``; task keys are run ids, so clients dedupe.

    A malformed address, nothing listening or a service that is not a Dask scheduler each end
    in one UserError within about ``connect_timeout_s``.
    """
    if not scheduler:
        raise UserError(
            "--launcher dask needs --scheduler ADDRESS of a running scheduler, e.g. "
            "tcp://10.0.0.5:8786"
        )
    try:
        from distributed import Client, as_completed
        from distributed.comm import parse_address
        from distributed.comm.addressing import parse_host_port
    except ImportError:
        raise UserError(
            "--launcher dask needs dask.distributed: pip install 'bench[dask]'"
        ) from None
    try:
        host, port = parse_host_port(parse_address(scheduler)[1])
    except ValueError:
        host, port = "", 0
    if not host or not 0 < port < 65536:
        expected = "expected PROTOCOL://HOST:PORT, e.g. tcp://10.0.0.5:8786"
        raise UserError(f"--scheduler {scheduler!r} is not a scheduler address; {expected}")
    try:
        client = Client(scheduler, timeout=f"{connect_timeout_s}s")
    except Exception as exc:  # refused, no answer, a peer not speaking Dask (even AssertionError)
        failed = f"cannot connect to a Dask scheduler at {scheduler} within {connect_timeout_s:g} s"
        raise UserError(f"{failed} ({reason(exc)}); is one listening there?") from None
    opts = _for_workers(options, options.threads or 1)
    try:
        futures = [
            client.submit(execute, spec, opts, "dask", key=f"bench-run-{spec.run_id}", pure=False)
            for spec in specs
        ]
        for future in as_completed(futures):
            yield future.result()
    finally:
        client.close()


def slurm(
    specs: Sequence[RunSpec],
    options: RuntimeOptions,
    cluster: str | None = None,
    partition: str | None = None,
    timeout_min: int = 60,
    poll_s: float = 5.0,
    **_: Any,
) -> Iterator[Finished]:
    """One Slurm array task per run via submitit; logs under ``<output>/slurm/``. ``cluster``: None
    (auto), local, debug."""
    try:
        import submitit
    except ImportError:
        raise UserError("--launcher slurm needs submitit: pip install 'bench[slurm]'") from None
    opts = _for_workers(options, options.threads or 1)
    executor = submitit.AutoExecutor(folder=Path(opts.output_dir) / "slurm" / "%j", cluster=cluster)
    params: dict[str, Any] = {
        "timeout_min": timeout_min,
        "cpus_per_task": opts.threads,
        "name": "bench",
    }
    if partition:
        params["slurm_partition"] = partition
    executor.update_parameters(**params)
    pending = executor.map_array(execute, list(specs), [opts] * len(specs), ["slurm"] * len(specs))
    while pending:
        finished = [job for job in pending if job.done()]
        for job in finished:
            pending.remove(job)
            yield job.result()
        if pending and not finished:
            time.sleep(poll_s)


LAUNCHERS: dict[str, Callable[..., Iterator[Finished]]] = {
    "local": local,
    "dask": dask,
    "slurm": slurm,
}


def get(name: str) -> Callable[..., Iterator[Finished]]:
    if name not in LAUNCHERS:
        raise UserError(f"unknown launcher {name!r}; launchers: {', '.join(LAUNCHERS)}")
    return LAUNCHERS[name]


def trained_log(run_dir: Path) -> list[dict[str, Any]]:
    """The ``trained.jsonl`` lines of a run: one per worker session that trained it."""
    return records.read_records(Path(run_dir) / TRAINED)
