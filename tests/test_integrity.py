"""Result integrity: a number is exactly what produced it.

The run id covers everything that changes results (identity tests), a table cell pools
only runs that differ in seeds (pooling), and a short or corrupt run is repaired or
excluded, never trusted (corruption tests).
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bench import cli, records, runner, sweep
from bench.report import build_report, cells, dataset_table
from bench.report_files import load_runs
from bench.spec import RunSpec, RuntimeOptions, make_spec

ROOT = Path(__file__).resolve().parents[1]


def _options(output_dir: Path, **kw) -> RuntimeOptions:
    return RuntimeOptions(output_dir=output_dir, progress=False, threads=1, **kw)


def _spec(**kw) -> RunSpec:
    return make_spec("erm", "debug", size="tiny", **{"steps": 12, "eval_every": 4, **kw})


def _numbers(run_dir: Path) -> list[tuple[int, str]]:
    """What a run reports: its steps and evaluations (not wall times)."""
    return [
        (r["step"], json.dumps(r["eval"], sort_keys=True))
        for r in records.read_records(run_dir / records.RESULTS)
    ]


@pytest.fixture
def reference(tmp_path_factory) -> tuple[RunSpec, list]:
    spec = _spec()
    out = tmp_path_factory.mktemp("reference")
    runner.run(spec, _options(out))
    return spec, _numbers(records.run_dir(out, spec.run_id))


# --- identity ---------------------------------------------------------------------------------


def test_every_field_of_the_spec_changes_the_run_id():
    """Generated from the dataclass's fields, so a field added later is covered automatically."""
    base = _spec()
    changed = {
        "algorithm": "irm",
        "dataset": "fish_toy",
        "test_envs": ("e1",),
        "trial_seed": 1,
        "hparams_seed": 1,
        "overrides": {"lr": 0.5},
        "steps": 13,
        "eval_every": 5,
        "holdout_fraction": 0.3,
        "size": "full",
        "algorithm_version": 99,
        "dataset_version": 99,
        "precision": "bf16",
        "hparams": {**base.hparams, "lr": 0.5},
        "space": "0" * 16,
        "data": "sha256:" + "0" * 16,
        "code": {"mylab": "0" * 16},
        "identity": 99,
        "averaging": {"kind": "ema", "decay": 0.999},
        "uda_fraction": 0.3,
    }
    assert set(changed) == {f.name for f in dataclasses.fields(RunSpec)}, (
        "add the new field to this table"
    )
    ids = {base.run_id}
    for name, value in changed.items():
        run_id = dataclasses.replace(base, **{name: value}).run_id
        assert run_id not in ids, f"{name} does not change the run id"
        ids.add(run_id)


def test_spec_resolves_hparams_space_and_data():
    spec = _spec()
    assert (
        spec.hparams["lr"] == pytest.approx(1e-3) and spec.data == "generated" and spec.code == {}
    )
    assert spec.precision == "fp32" and spec.identity == records.IDENTITY
    assert RunSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    assert (
        make_spec("erm", "debug", size="tiny", steps=12, eval_every=4, precision="fp32").run_id
        == spec.run_id
    )


def _fake_mnist(path: Path, seed: int) -> None:
    gen = np.random.default_rng(seed)
    arrays = {
        k: gen.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        for k, n in (("x_train", 1500), ("x_test", 500))
    }
    arrays |= {
        k: gen.integers(0, 10, n).astype(np.uint8) for k, n in (("y_train", 1500), ("y_test", 500))
    }
    np.savez(path, **arrays)


def test_data_content_is_part_of_the_run_id_not_its_location(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    _fake_mnist(a / "mnist.npz", 0)
    _fake_mnist(b / "mnist.npz", 0)
    same = [make_spec("erm", "cmnist", size="tiny", data_dir=str(d)) for d in (a, b)]
    assert same[0].run_id == same[1].run_id and same[0].data.startswith("sha256:")
    _fake_mnist(b / "mnist.npz", 1)  # another copy of "MNIST" under the same path
    assert make_spec("erm", "cmnist", size="tiny", data_dir=str(b)).run_id != same[0].run_id


PLUGIN = '''
from bench.algorithms.erm import ERM
from bench.algorithms.base import register_algorithm
from bench.hparams import LogUniform


@register_algorithm("plug_erm")
class PlugERM(ERM):
    """ERM under another name, with its own default learning rate."""

    VERSION = 1
    HPARAMS = {{"lr": LogUniform({lr}, "learning rate", low=1e-4, high=1e-2)}}
{extra}
'''


def _bench(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


@pytest.mark.slow
def test_changing_a_plugin_default_or_its_source_makes_a_new_run(tmp_path):
    """The acceptance case: same command after each edit -> trained again; unchanged -> skipped."""
    plugin = tmp_path / "mylab.py"
    args = (
        "run",
        "--import",
        str(plugin),
        "--algorithm",
        "plug_erm",
        "--dataset",
        "debug",
        "--size",
        "tiny",
        "--steps",
        "3",
        "--output-dir",
        str(tmp_path / "out"),
        "--no-progress",
    )
    outputs = []
    for lr, extra in (
        (1e-3, ""),
        (1e-3, ""),
        (2e-3, ""),
        (2e-3, "# a comment changes the source digest"),
    ):
        plugin.write_text(PLUGIN.format(lr=lr, extra=extra))
        result = _bench(*args, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        outputs.append(result.stdout)
    assert ["already done" in o for o in outputs] == [False, True, False, False]
    assert len(list((tmp_path / "out" / "runs").iterdir())) == 3


def test_a_finished_run_is_skipped_only_for_the_identical_request(tmp_path, reference):
    spec, numbers = reference
    options = _options(tmp_path)
    assert runner.run(spec, options).status == "ok"
    assert runner.run(spec, options).status == "skipped"
    assert runner.run(_spec(overrides={"lr": 0.01}), options).status == "ok"
    assert _numbers(records.run_dir(tmp_path, spec.run_id)) == numbers


def test_output_dir_of_an_older_identity_scheme_is_refused(tmp_path, capsys):
    old = tmp_path / "runs" / "0123456789abcdef"
    old.mkdir(parents=True)
    records.write_json(
        old / records.SPEC, {"spec": {"algorithm": "erm"}, "run_id": old.name, "hparams": {}}
    )
    argv = [
        "run",
        "--algorithm",
        "erm",
        "--dataset",
        "debug",
        "--size",
        "tiny",
        "--steps",
        "2",
        "--output-dir",
        str(tmp_path),
    ]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "older bench" in err[0] and "--output-dir" in err[0]
    assert cli.main(["leaderboard", "--runs", str(tmp_path), "--out", str(tmp_path / "lb")]) == 2


# --- pooling ----------------------------------------------------------------------------------


def _sweep(out: Path, *extra: str) -> int:
    return cli.main(
        [
            "sweep",
            "--algorithms",
            "erm",
            "--datasets",
            "debug",
            "--test-envs",
            "e0",
            "--n-trials",
            "2",
            "--size",
            "tiny",
            "--steps",
            "30",
            "--eval-every",
            "10",
            "--jobs",
            "1",
            "--no-progress",
            "--output-dir",
            str(out),
            *extra,
        ]
    )


def test_runs_of_different_configurations_get_separate_rows_and_the_default_row_is_unchanged(
    tmp_path, capsys
):
    assert _sweep(tmp_path) == 0
    before = cells(build_report(load_runs(tmp_path), ["train_val", "last"]), "debug", "last")["e0"][
        "erm"
    ]
    assert _sweep(tmp_path, "--hparams", '{"lr": 1e-05}') == 0
    report = build_report(load_runs(tmp_path), ["train_val", "last"])
    for rule in ("train_val", "last"):
        table = dataset_table(report, "debug", rule)
        assert [row[0] for row in table.rows] == ["erm", "erm [lr=1e-05]"]
    after = cells(report, "debug", "last")["e0"]
    assert after["erm"].values == before.values and after["erm [lr=1e-05]"].values != before.values


@pytest.mark.slow  # end to end through the CLI or several processes: seconds each
def test_runs_of_different_protocols_get_separate_tables(tmp_path):
    assert _sweep(tmp_path) == 0
    assert _sweep(tmp_path, "--eval-every", "15") == 0  # the later flag wins
    report = build_report(load_runs(tmp_path), ["last"])
    assert report.datasets == ["debug [eval_every=10]", "debug [eval_every=15]"]


# --- damaged runs -------------------------------------------------------------------------------


def _finished(out: Path) -> tuple[RunSpec, Path]:
    spec = _spec()
    assert runner.run(spec, _options(out)).status == "ok"
    return spec, records.run_dir(out, spec.run_id)


def _truncate(path: Path, keep_lines: int) -> None:
    path.write_text("".join(path.read_text().splitlines(keepends=True)[:keep_lines]))


def test_truncated_records_of_a_finished_run_are_damaged_excluded_and_retrained(
    tmp_path, reference, caplog
):
    spec, numbers = reference
    _, directory = _finished(tmp_path)
    _truncate(directory / records.RESULTS, 2)
    [run] = load_runs(tmp_path)
    assert run.status == "damaged" and "2 of 4 evaluations" in run.damage
    report = build_report([run], ["oracle", "last"])
    assert report.damaged == [run] and all(
        s.acc is None and s.n_damaged == 1 for s in report.selected["last"]
    )
    assert sweep.state(tmp_path, spec) == "damaged"
    assert runner.run(spec, _options(tmp_path)).status == "ok"  # repaired by re-running
    assert _numbers(directory) == numbers
    assert "is damaged" in caplog.text and "from scratch" in caplog.text


@pytest.mark.parametrize(
    "damage", ["truncate_records", "corrupt_checkpoint", "garbage_spec", "corrupt_middle_record"]
)
def test_an_interrupted_run_with_damaged_files_restarts_to_the_same_numbers(
    tmp_path, reference, damage, caplog
):
    spec, numbers = reference
    _, directory = _finished(tmp_path)
    (directory / records.DONE).unlink()  # as if killed after its last checkpoint
    if damage == "truncate_records":
        _truncate(directory / records.RESULTS, 2)  # the checkpoint is newer than the records
    elif damage == "corrupt_checkpoint":
        (directory / records.CHECKPOINT).write_bytes(os.urandom(256))
    elif damage == "garbage_spec":
        (directory / records.SPEC).write_text("{not json")
    else:
        lines = (directory / records.RESULTS).read_text().splitlines(keepends=True)
        (directory / records.RESULTS).write_text("".join([lines[0], "garbage\n", *lines[2:]]))
    assert runner.run(spec, _options(tmp_path)).status == "ok"
    assert _numbers(directory) == numbers
    assert "from scratch" in caplog.text
    assert records.check_run(directory, spec.to_dict())[0] == "ok"


def test_show_and_leaderboard_report_damaged_runs_and_never_use_them(tmp_path, capsys):
    _, directory = _finished(tmp_path)
    (directory / records.SPEC).write_text("garbage")
    assert cli.main(["show", str(tmp_path)]) == 0
    assert "damaged" in capsys.readouterr().out
    assert cli.main(["show", str(directory)]) == 2  # the run itself: one line, no traceback
    assert "unreadable" in capsys.readouterr().err
    assert (
        cli.main(
            ["leaderboard", "--runs", str(tmp_path), "--out", str(tmp_path / "lb"), "--no-figures"]
        )
        == 0
    )
    page = (tmp_path / "lb" / "README.md").read_text()
    assert f"Damaged run {directory.name}" in page and "1 damaged" in page


def test_a_torn_last_record_is_skipped_and_temp_files_are_cleaned(tmp_path, reference):
    spec, numbers = reference
    _, directory = _finished(tmp_path)
    (directory / records.DONE).unlink()
    with open(directory / records.RESULTS, "a") as f:
        f.write('{"step": 12, "ev')  # a crash mid-append
    (directory / ".checkpoint.pt.abc123").write_bytes(b"partial write")
    assert runner.run(spec, _options(tmp_path)).status == "ok"
    assert _numbers(directory) == numbers and not list(directory.glob(".*"))


# --- security -----------------------------------------------------------------------------------


class _Planted:
    def __reduce__(self):
        return (Path.touch, (Path(os.environ["BENCH_PLANTED"]),))


def test_a_planted_checkpoint_cannot_run_code(tmp_path, reference, monkeypatch):
    spec, numbers = reference
    _, directory = _finished(tmp_path)
    (directory / records.DONE).unlink()
    marker = tmp_path / "pwned"
    monkeypatch.setenv("BENCH_PLANTED", str(marker))
    (directory / records.CHECKPOINT).write_bytes(
        pickle.dumps({"algorithm": _Planted(), "rng": {}, "step": 0, "wall_s": 0}, protocol=2)
    )
    assert runner.run(spec, _options(tmp_path)).status == "ok"
    assert not marker.exists() and _numbers(directory) == numbers


def test_every_file_of_a_run_honours_the_umask(tmp_path):
    old = os.umask(0o002)
    try:
        import importlib

        importlib.reload(records)  # the mode is read once per process
        _, directory = _finished(tmp_path)
        modes = {p.name: p.stat().st_mode & 0o777 for p in directory.iterdir()}
    finally:
        os.umask(old)
        importlib.reload(records)
    assert set(modes.values()) == {0o664}, modes


# --- flags honoured in every mode, plugins in every worker ---------------------------------------


def test_shots_are_honoured_in_sweeps(tmp_path):
    assert (
        cli.main(
            [
                "sweep",
                "--algorithms",
                "scratch",
                "--datasets",
                "mnist_ab",
                "--shots",
                "50",
                "--size",
                "tiny",
                "--steps",
                "2",
                "--jobs",
                "1",
                "--no-progress",
                "--output-dir",
                str(tmp_path),
            ]
        )
        == 0
    )
    [run] = load_runs(tmp_path)
    assert run.spec["dataset"] == "mnist_ab_k50"
    target = run.records[-1]["eval"]["target"]
    assert target["in"]["n"] + target["out"]["n"] == 50 * 5  # 50 per class, 5 classes


@pytest.mark.slow
@pytest.mark.parametrize(
    "launcher",
    [
        ["--jobs", "2", "--n-trials", "2"],
        ["--launcher", "slurm", "--slurm-cluster", "local"],
    ],
    ids=["loky-two-jobs", "submitit-local"],
)
def test_a_plugin_sweep_in_fresh_worker_processes(tmp_path, launcher):
    """loky and submitit's local executor run each run in another process: the plugin must be
    imported there too."""
    plugin = tmp_path / "mylab.py"
    plugin.write_text(PLUGIN.format(lr=1e-3, extra=""))
    argv = ["sweep", "--import", str(plugin), "--algorithms", "plug_erm", "--datasets", "debug"]
    argv += ["--test-envs", "e0", "--size", "tiny", "--steps", "3", "--no-progress", *launcher]
    result = _bench(*argv, "--output-dir", str(tmp_path / "out"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    runs = load_runs(tmp_path / "out")
    assert f"trained {len(runs)}," in result.stdout and len(runs) == (
        2 if "--jobs" in launcher else 1
    )
    assert {r.spec["code"] != {} for r in runs} == {True}


@pytest.mark.slow  # end to end through the CLI or several processes: seconds each
def test_a_transfer_sweep_over_recipes(tmp_path):
    """--recipes is the algorithm list of a transfer sweep; --shots picks each task's variant."""
    argv = [
        "transfer",
        "--recipes",
        "scratch,linear_probe",
        "--tasks",
        "mnist_ab",
        "--shots",
        "10",
        "--size",
        "tiny",
        "--steps",
        "2",
        "--jobs",
        "1",
        "--no-progress",
        "--output-dir",
        str(tmp_path),
    ]
    assert cli.main(argv) == 0
    runs = load_runs(tmp_path)
    assert sorted(r.spec["algorithm"] for r in runs) == ["linear_probe", "scratch"]
    assert {r.spec["dataset"] for r in runs} == {"mnist_ab_k10"}
