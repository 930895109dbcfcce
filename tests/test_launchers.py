"""Launchers: core planning, loky processes, a real Dask scheduler and worker on loopback,
submitit."""

import os

import pytest

from bench import launchers, records, runner, sweep
from bench.errors import UserError
from bench.spec import RuntimeOptions, make_spec


def tiny_specs(n_trials=2):
    return sweep.expand(
        sweep.Grid(
            ("erm",),
            ("debug",),
            n_trials=n_trials,
            test_envs="e0",
            steps=20,
            eval_every=10,
            size="tiny",
        )
    )


def assert_all_trained_once(out, specs):
    for spec in specs:
        d = records.run_dir(out, spec.run_id)
        assert (d / records.DONE).exists() and len(launchers.trained_log(d)) == 1


@pytest.mark.parametrize(
    "n_cores,n_runs,jobs,threads,expected",
    [
        (2, 8, None, None, (2, 1)),  # one single-threaded process per core
        (2, 8, 1, None, (1, 2)),  # one process gets both cores
        (8, 3, None, None, (3, 2)),  # never more processes than runs
        (4, 8, 2, 1, (2, 1)),  # explicit threads win
    ],
)
def test_plan_local_fills_the_cores(monkeypatch, n_cores, n_runs, jobs, threads, expected):
    monkeypatch.setattr(launchers, "cores", lambda: n_cores)
    assert launchers.plan_local(n_runs, jobs, threads) == expected


@pytest.mark.slow
def test_local_launcher_with_two_loky_processes(tmp_path):
    specs = tiny_specs()
    finished = list(launchers.local(specs, RuntimeOptions(output_dir=tmp_path), jobs=2))
    assert sorted(f.run_id for f in finished) == sorted(s.run_id for s in specs)
    assert {f.status for f in finished} == {"ok"}
    pids = {
        line["pid"]
        for s in specs
        for line in launchers.trained_log(records.run_dir(tmp_path, s.run_id))
    }
    assert os.getpid() not in pids  # trained in worker processes
    assert_all_trained_once(tmp_path, specs)


@pytest.mark.slow  # end to end through the CLI or several processes: seconds each
def test_local_launcher_trains_each_run_once_through_the_runner(tmp_path):
    """One training loop: every run, of any algorithm, is its own runner.run in this process."""
    specs = [
        make_spec(a, "debug", size="tiny", steps=5, trial_seed=t)
        for a in ("erm", "vrex")
        for t in range(3)
    ]
    finished = list(launchers.local(specs, RuntimeOptions(output_dir=tmp_path), jobs=1))
    assert [f.run_id for f in finished] == [s.run_id for s in specs]
    assert {f.status for f in finished} == {"ok"}
    assert_all_trained_once(tmp_path, specs)
    for spec in specs:  # each alone equals a fresh runner.run of the same spec
        alone = runner.run(spec, RuntimeOptions(output_dir=tmp_path / "alone"))
        ran = records.read_records(records.run_dir(tmp_path, spec.run_id) / records.RESULTS)
        assert ran[-1]["eval"] == alone.last_record["eval"]


@pytest.mark.slow
def test_dask_launcher_on_a_real_local_cluster(tmp_path):
    distributed = pytest.importorskip("distributed")
    specs = tiny_specs()
    options = RuntimeOptions(output_dir=tmp_path, threads=1)
    with distributed.LocalCluster(
        n_workers=1,
        threads_per_worker=1,
        processes=False,
        protocol="tcp://",
        host="127.0.0.1",
        dashboard_address=None,
    ) as cluster:
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
        result = sweep.launch(
            specs, options, "dask", progress=False, scheduler=cluster.scheduler_address
        )
        assert result.counts == {"ok": 2}
        again = sweep.launch(
            specs, options, "dask", progress=False, scheduler=cluster.scheduler_address
        )
        assert again.before["done"] == 2 and not again.finished
    assert_all_trained_once(tmp_path, specs)
    assert {
        line["launcher"]
        for s in specs
        for line in launchers.trained_log(records.run_dir(tmp_path, s.run_id))
    } == {"dask"}


def test_dask_launcher_needs_a_reachable_scheduler(tmp_path):
    pytest.importorskip("distributed")
    with pytest.raises(UserError, match="--scheduler"):
        list(launchers.dask(tiny_specs(1), RuntimeOptions(output_dir=tmp_path)))
    with pytest.raises(UserError, match="cannot connect"):
        list(
            launchers.dask(
                tiny_specs(1),
                RuntimeOptions(output_dir=tmp_path),
                scheduler="tcp://127.0.0.1:9",
                connect_timeout_s=0.5,
            )
        )


@pytest.mark.slow
def test_slurm_launcher_with_submitit_debug_executor(tmp_path):
    pytest.importorskip("submitit")
    specs = tiny_specs()
    result = sweep.launch(
        specs,
        RuntimeOptions(output_dir=tmp_path, threads=1),
        "slurm",
        progress=False,
        cluster="debug",
        poll_s=0.01,
    )
    assert result.counts == {"ok": 2}
    assert_all_trained_once(tmp_path, specs)
    assert (tmp_path / "slurm").is_dir()


def test_unknown_launcher_is_a_user_error():
    with pytest.raises(UserError, match="unknown launcher 'ssh'"):
        launchers.get("ssh")
