"""Every failure a user can cause ends in one line on stderr (``error: ...``) and exit code 2.

Each case is a command line for ``bench.cli.main`` (run in-process), the substring its
error line must contain, and an optional ``setup(tmp, monkeypatch)`` that writes the bad
files under ``tmp`` (or simulates being offline) first. ``{tmp}`` in the command and the
substring stands for the test's tmp_path. Add cases with ``case(...)`` to a list below.
"""

from __future__ import annotations

import gzip
import pickle
import shlex
import socket
import sys
import threading
import time
import types
import zipfile
from functools import partial
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.datasets import DATASETS
from bench.datasets.files import MNIST_KEYS

Setup = Callable[[Path, pytest.MonkeyPatch], None]


def case(argv: str, expected: str, setup: Setup | None = None, *, id: str) -> object:
    """One bad input: ``argv`` (shell syntax, ``{tmp}`` = tmp_path), the fault its error names."""
    return pytest.param(argv, expected, setup, id=id)


def assert_one_error_line(argv: list[str], expected: str, capfd: pytest.CaptureFixture[str]) -> str:
    """Exit code 2, exactly one stderr line ``error: ...`` holding ``expected``, no traceback."""
    code = main(argv)
    out, err = capfd.readouterr()
    assert "Traceback" not in out + err
    lines = err.splitlines()
    assert code == 2, f"exit code {code}; stderr: {err}"
    assert len(lines) == 1 and lines[0].startswith("error: "), f"not one error line:\n{err}"
    assert expected in lines[0], f"{expected!r} not in {lines[0]!r}"
    return lines[0]


def _expand(text: str, tmp: Path) -> str:
    return text.replace("{tmp}", str(tmp))


# -- setups ---------------------------------------------------------------------------------
def _offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No network: every TCP connection attempt fails (nothing leaves the machine in tests)."""

    def refuse(address, *args, **kwargs):
        raise OSError(f"network is unreachable (test) for {address[0]}")

    monkeypatch.setattr(socket, "create_connection", refuse)


def _mnist(write: Callable[[Path], None]) -> Setup:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / "data").mkdir()
        write(tmp / "data" / "mnist.npz")

    return setup


def _good_npz(path: Path) -> None:
    images, labels = np.zeros((8, 28, 28), np.uint8), np.zeros(8, np.uint8)
    np.savez_compressed(path, x_train=images, y_train=labels, x_test=images, y_test=labels)


def _random_bytes(path: Path) -> None:
    path.write_bytes(np.random.default_rng(0).bytes(4096))


def _truncated_npz(path: Path) -> None:
    _good_npz(path)
    path.write_bytes(path.read_bytes()[:200])


def _npz(**arrays: np.ndarray) -> Callable[[Path], None]:
    return lambda path: np.savez(path, **arrays)


def _raw_mnist_folder(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "data" / "MNIST" / "raw").mkdir(parents=True)


def _offline_empty(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp / "data").mkdir()
    _offline(monkeypatch)


def _pacs(bad_name: str, content: bytes | None) -> Setup:
    """A tiny PACS copy (1 image per domain and class) plus one bad file in photo/dog."""

    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        from PIL import Image

        pacs = DATASETS.get("pacs")
        for domain in pacs.env_names():
            for name in pacs.CLASSES:
                folder = tmp / "data" / "pacs" / domain / name
                folder.mkdir(parents=True)
                Image.new("RGB", (64, 64), (90, 0, 0)).save(folder / "1.jpg")
        bad = tmp / "data" / "pacs" / "photo" / "dog" / bad_name
        if content is None:  # a real JPEG cut short
            Image.new("RGB", (64, 64), (0, 90, 0)).save(bad)
        bad.write_bytes(bad.read_bytes()[:300] if content is None else content)

    return setup


def _fake_hub(names: list[tuple[str, str]]) -> types.SimpleNamespace:
    """Stands in for the ``datasets`` module: one row per (domain, class) name pair."""
    from PIL import Image

    rows = [{"image": Image.new("RGB", (8, 8)), "domain": d, "label": c} for d, c in names]
    features = {"domain": object(), "label": object()}  # plain string columns (no ClassLabel)
    data = type("Hub", (), {"features": features, "__iter__": lambda self: iter(rows)})()
    return types.SimpleNamespace(load_dataset=lambda hub_id, split: data)


def _hub(names: list[tuple[str, str]] | None, offline: bool = False) -> Setup:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / "data").mkdir()
        monkeypatch.setitem(sys.modules, "datasets", None if names is None else _fake_hub(names))
        monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        if offline:
            _offline(monkeypatch)
        else:
            monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # no host check: the fake hub is local

    return setup


def _gue(content: bytes) -> Setup:
    def setup(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        (tmp / "data" / "genomic").mkdir(parents=True)
        (tmp / "data" / "genomic" / "gue_prom_core_tata.csv.gz").write_bytes(content)
        # the other environment's file is intact: every file is fingerprinted before a run starts
        (tmp / "data" / "genomic" / "gue_prom_core_notata.csv.gz").write_bytes(
            gzip.compress(CSV + _random_rows(20))
        )

    return setup


def _random_rows(n: int) -> bytes:
    bases = np.random.default_rng(0).choice(list("ACGT"), size=(n, 70))
    return "".join(f"{''.join(row)},1,train\n" for row in bases).encode()


def _weights(write: Callable[[Path], None]) -> Setup:
    return lambda tmp, monkeypatch: write(tmp / "w.pt")


def _zip(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "not weights")


# -- cases ----------------------------------------------------------------------------------
OUT = "--steps 2 --no-progress --output-dir {tmp}/out"
DATA = f"--size tiny --data-dir {{tmp}}/data {OUT}"
DEBUG = f"run --algorithm erm --dataset debug {OUT}"
SWEEP = f"sweep --algorithms erm --datasets debug --test-envs e0 --size tiny {OUT}"
CMNIST = f"run --algorithm erm --dataset cmnist_irm {DATA}"
PACS = f"run --algorithm erm --dataset pacs {DATA}"
GUE = f"run --algorithm erm --dataset gue_prom_core {DATA}"


def hparams(overrides: str, expected: str, *, id: str, algorithm: str = "erm", base: str = DEBUG):
    """A case whose only fault is ``--hparams OVERRIDES``."""
    return case(f"{base.replace('erm', algorithm)} --hparams '{overrides}'", expected, id=id)


HPARAM_CASES = [
    hparams('{"l2": -5}', "'l2' must be >= 0, got -5", id="hparam-l2-negative"),
    hparams('{"lr": -1}', "'lr' must be > 0", id="hparam-lr-negative"),
    hparams('{"lr": 0}', "'lr' must be > 0", id="hparam-lr-zero"),
    hparams('{"batch_size": -3}', "'batch_size' must be >= 0", id="hparam-batch-size-negative"),
    hparams('{"mlp_width": 0}', "'mlp_width' must be >= 1", id="hparam-mlp-width-zero"),
    hparams('{"mlp_depth": -1}', "'mlp_depth' must be >= 1", id="hparam-mlp-depth-negative"),
    hparams('{"mlp_dropout": 5}', "'mlp_dropout' must be in [0, 1)", id="hparam-mlp-dropout-5"),
    hparams(
        '{"weight_decay": -0.1}', "'weight_decay' must be >= 0", id="hparam-weight-decay-negative"
    ),
    hparams('{"lr": NaN}', "'lr' must be finite", id="hparam-lr-nan"),
    hparams('{"lr": Infinity}', "'lr' must be finite", id="hparam-lr-infinite"),
    hparams('{"lr": "fast"}', "'lr' must be float", id="hparam-lr-string"),
    hparams('{"batch_size": 3.5}', "'batch_size' must be int", id="hparam-batch-size-float"),
    hparams('{"learning_rate": 0.1}', "unknown hparam(s) learning_rate", id="hparam-unknown-key"),
    hparams('{"lr": 0.1', "--hparams is not valid JSON", id="hparam-bad-json"),
    hparams("[0.1]", "--hparams must be a JSON object", id="hparam-not-an-object"),
    hparams('{"featurizer": "nope"}', "unknown featurizer 'nope'", id="hparam-unknown-featurizer"),
    hparams('{"l2": -5}', "'l2' must be >= 0", base=CMNIST, id="hparam-fixed-l2-cmnist-irm"),
    hparams(
        '{"mlp_dropout": 5}',
        "'mlp_dropout' must be in [0, 1)",
        base=CMNIST,
        id="hparam-fixed-dropout-cmnist-irm",
    ),
    hparams(
        '{"irm_lambda": -1}',
        "'irm_lambda' must be >= 0",
        algorithm="irm",
        base=CMNIST,
        id="hparam-fixed-irm-lambda-paper-protocol",
    ),
    hparams(
        '{"ema": 1.0}', "'ema' must be in [0, 1)", algorithm="fishr", id="hparam-fishr-ema-one"
    ),
    hparams(
        '{"mixup_alpha": 0}',
        "'mixup_alpha' must be > 0",
        algorithm="mixup",
        id="hparam-mixup-alpha-zero",
    ),
    hparams(
        '{"beta1": 1.0}', "'beta1' must be in [0, 1)", algorithm="dann", id="hparam-dann-beta1-one"
    ),
]

NPZ = "{tmp}/data/mnist.npz is damaged"
MNIST_CASES = [
    case(CMNIST, NPZ, _mnist(_truncated_npz), id="mnist-npz-truncated"),
    case(CMNIST, NPZ, _mnist(_random_bytes), id="mnist-npz-random-bytes"),
    case(CMNIST, NPZ, _mnist(lambda p: p.write_bytes(b"")), id="mnist-npz-zero-bytes"),
    case(
        CMNIST,
        "y_train is not a file",
        _mnist(_npz(x_train=np.zeros((8, 28, 28), np.uint8))),
        id="mnist-npz-missing-keys",
    ),
    case(
        CMNIST,
        "array shapes",
        _mnist(_npz(**{k: np.zeros(8) for k in MNIST_KEYS})),
        id="mnist-npz-wrong-shapes",
    ),
    case(
        CMNIST,
        "replace it with a good mnist.npz",
        _mnist(Path.mkdir),
        id="mnist-npz-is-a-directory",
    ),
    case(
        CMNIST, "{tmp}/data/MNIST/raw is incomplete", _raw_mnist_folder, id="mnist-raw-folder-empty"
    ),
    case(
        CMNIST + " --download", "cannot download MNIST", _offline_empty, id="mnist-download-offline"
    ),
]

BAD_IMAGE = "cannot decode image {tmp}/data/pacs/photo/dog/0."
IMAGE_CASES = [
    case(PACS, BAD_IMAGE + "jpg", _pacs("0.jpg", None), id="image-truncated-jpeg"),
    case(PACS, BAD_IMAGE + "jpg", _pacs("0.jpg", b""), id="image-zero-bytes"),
    case(
        PACS, BAD_IMAGE + "png", _pacs("0.png", b"just some text\n"), id="image-text-file-named-png"
    ),
    case(
        PACS + " --download",
        "huggingface.co:443 is unreachable",
        _hub([], offline=True),
        id="hub-download-offline",
    ),
    case(
        PACS + " --download",
        "pip install 'bench[hub]'",
        _hub(None),
        id="hub-datasets-package-missing",
    ),
    case(
        PACS + " --download",
        "hub domain name '..' is not usable",
        _hub([("..", "dog")]),
        id="hub-domain-name-dot-dot",
    ),
    case(
        PACS + " --download",
        "hub label name '.' is not usable",
        _hub([("photo", ".")]),
        id="hub-class-name-dot",
    ),
    case(
        PACS + " --download",
        "'a/b' and 'a_b' both become",
        _hub([("a/b", "x"), ("a_b", "x")]),
        id="hub-domain-names-collide",
    ),
]

CSV = b"sequence,label,split\n"
GUE_FILE = "cannot read {tmp}/data/genomic/gue_prom_core_tata.csv.gz"
GENOMIC_CASES = [
    case(
        GUE,
        GUE_FILE,
        _gue(gzip.compress(CSV + _random_rows(500))[:2000]),
        id="genomic-csv-truncated",
    ),
    case(GUE, GUE_FILE, _gue(b""), id="genomic-csv-zero-bytes"),
    case(GUE, "No columns to parse", _gue(gzip.compress(b"")), id="genomic-csv-empty"),
    case(
        GUE,
        "missing column(s) label",
        _gue(gzip.compress(b"sequence,split\nACGT,train\n")),
        id="genomic-csv-missing-label",
    ),
    case(
        GUE,
        "missing column split",
        _gue(gzip.compress(b"sequence,label\nACGT,1\n")),
        id="genomic-csv-missing-split",
    ),
    case(
        GUE,
        "label must hold integer class indices",
        _gue(gzip.compress(CSV + b"A,yes,train\n")),
        id="genomic-csv-label-not-integer",
    ),
    case(
        GUE,
        "row 2 has no sequence",
        _gue(gzip.compress(CSV + b"ACGT,1,train\n,0,train\n")),
        id="genomic-csv-empty-sequence",
    ),
    case(
        GUE,
        GUE_FILE,
        _gue(gzip.compress(CSV + "ACGT,1,tr\u00e4in\n".encode("latin-1"))),
        id="genomic-csv-not-utf8",
    ),
]

WEIGHTS = DEBUG + " --weights {tmp}/w.pt"
NOT_WEIGHTS = "{tmp}/w.pt is not a torch state_dict"
WEIGHTS_CASES = [
    case(WEIGHTS, NOT_WEIGHTS, _weights(lambda p: p.write_text("hello\n")), id="weights-text-file"),
    case(WEIGHTS, NOT_WEIGHTS, _weights(lambda p: p.write_bytes(b"")), id="weights-zero-bytes"),
    case(
        WEIGHTS,
        NOT_WEIGHTS,
        _weights(lambda p: p.write_bytes(pickle.dumps({"a": 1}))),
        id="weights-pickle-of-a-dict",
    ),
    case(
        WEIGHTS,
        "holds a Tensor, not a state_dict",
        _weights(partial(torch.save, torch.ones(3))),
        id="weights-a-tensor",
    ),
    case(
        WEIGHTS,
        "holds a dict, not a state_dict",
        _weights(partial(torch.save, {"lr": 0.1})),
        id="weights-dict-of-numbers",
    ),
    case(WEIGHTS, NOT_WEIGHTS, _weights(_zip), id="weights-zip-archive"),
    case(WEIGHTS, "no such file", id="weights-missing-file"),
]

DASK = SWEEP + " --launcher dask --scheduler "
DASK_CASES = [
    case(
        DASK + "notaurl",
        "--scheduler 'notaurl' is not a scheduler address",
        id="dask-address-no-port",
    ),
    case(
        DASK + "tcp://",
        "--scheduler 'tcp://' is not a scheduler address",
        id="dask-address-no-host",
    ),
    case(
        DASK + "tcp://host:notaport",
        "is not a scheduler address",
        id="dask-address-port-not-a-number",
    ),
    case(
        DASK + "tcp://127.0.0.1:99999",
        "is not a scheduler address",
        id="dask-address-port-out-of-range",
    ),
]


def _file_at(name: str, text: str) -> Setup:
    return lambda tmp, monkeypatch: (tmp / name).write_text(text)


def _legacy_output_dir(tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A run written under identity scheme 1 (its spec has no ``identity``)."""
    run = tmp / "out" / "runs" / "erm-debug-e0-t0-h0"
    run.mkdir(parents=True)
    (run / "spec.json").write_text(
        '{"spec": {"algorithm": "erm"}, "run_id": "erm-debug-e0-t0-h0", "hparams": {}}'
    )


RUN_CASES = [
    case(DEBUG + " --device tpu9", "--device tpu9", id="device-unknown"),
    case(DEBUG + " --device cuda:x", "--device cuda:x", id="device-garbage"),
    case(DEBUG + " --device cuda", "CUDA is not available", id="device-cuda-absent"),
    case(DEBUG + " --threads -1", "--threads must be >= 1", id="threads-negative"),
    case(DEBUG + " --threads 0", "--threads must be >= 1", id="threads-zero"),
    case(SWEEP + " --jobs 0", "--jobs must be >= 1", id="jobs-zero"),
    case(SWEEP + " --jobs -2", "--jobs must be >= 1", id="jobs-negative"),
    case(SWEEP + " --threads 0", "--threads must be >= 1", id="sweep-threads-zero"),
    case(
        "run --algorithm sagnet --dataset spurious_toy --output-dir {tmp}/out",
        "sagnet needs a featurizer with at least two weight layers",
        id="sagnet-on-a-one-layer-mlp",
    ),
    case(DEBUG + " --averaging {kind", "--averaging is not valid JSON", id="averaging-bad-json"),
    case(
        DEBUG + " --averaging polyak", "unknown weight averaging 'polyak'", id="averaging-unknown"
    ),
    case(
        SWEEP + ' --averaging \'{"kind": "ema", "decay": 2}\'',
        "'decay' must be in [0, 1)",
        id="averaging-bad-parameter",
    ),
    case(
        DEBUG.replace("{tmp}/out", "{tmp}/afile"),
        "{tmp}/afile",
        _file_at("afile", "not a folder"),
        id="output-dir-is-a-file",
    ),
    case(DEBUG, "older bench", _legacy_output_dir, id="output-dir-older-identity"),
    case(
        DEBUG + " --import {tmp}/plug.py",
        "syntax error at {tmp}/plug.py:1",
        _file_at("plug.py", "def broken(:\n"),
        id="plugin-syntax-error",
    ),
    case(
        DEBUG + " --import {tmp}/plug.py",
        "ZeroDivisionError",
        _file_at("plug.py", "1 / 0\n"),
        id="plugin-raises",
    ),
    case(DEBUG + " --import {tmp}/none.py", "no such file", id="plugin-missing-file"),
    case(DEBUG + " --import no_such_module_xyz", "no_such_module_xyz", id="plugin-missing-module"),
    case(
        "run --algorithm my_plugin --dataset debug " + OUT,  # close to no registered name
        "Add --import",
        id="algorithm-unknown-hints-plugins",
    ),
    case(SWEEP + " --slurm-timeout 5", "--slurm-timeout does not apply", id="slurm-timeout-local"),
    case(
        SWEEP + " --scheduler tcp://127.0.0.1:1",
        "--scheduler does not apply",
        id="scheduler-without-dask",
    ),
    case(SWEEP + " --launcher slurm --jobs 2", "--jobs does not apply", id="jobs-with-slurm"),
    case(
        SWEEP + " --launcher slurm --vectorise",
        "--vectorise does not apply",
        id="vectorise-with-slurm",
    ),
    case(
        SWEEP + " --slurm-partition gpu",
        "--slurm-partition does not apply",
        id="slurm-flag-with-local",
    ),
    case(SWEEP + " --shots 10", "not a transfer task", id="shots-on-a-plain-dataset"),
    case(
        "transfer --task mnist_ab --recipe scratch --shots 7 " + OUT,
        "no 7-shot variant",
        id="shots-not-offered",
    ),
    case(
        "transfer --recipes finetun --tasks mnist_ab " + OUT,
        "Did you mean finetune",
        id="recipes-misspelt",
    ),
    case(
        "transfer --recipes finetune --tasks debug " + OUT,
        "not a transfer task",
        id="recipes-on-a-dataset",
    ),
    case(
        "transfer --recipes finetune,scratch --tasks mnist_ab --baseline scrach " + OUT,
        "unknown baseline recipe 'scrach'. Did you mean scratch?",
        id="transfer-baseline-misspelt",
    ),
    case(
        "sweep --algorithms erm --datasets debug --baseline scratch " + OUT,
        "--baseline is a transfer flag",
        id="baseline-on-a-dg-sweep",
    ),
    case(
        "transfer --recipes finetune --tasks mnist_ab --algorithms erm " + OUT,
        "--algorithms is not a transfer flag",
        id="recipes-with-algorithms",
    ),
    case(
        "transfer --recipes finetune " + OUT,
        "a transfer sweep needs --tasks",
        id="recipes-without-tasks",
    ),
    case("leaderboard --runs {tmp} --spread se", "add --format", id="spread-without-format"),
]

# A flag of another mode, or a mode left to guess, is refused with the subcommand to use.
MODE_CASES = [
    case("", "choose a command: run, sweep, transfer", id="no-command"),
    case(
        "run --algorithms erm,irm --datasets debug " + OUT,
        "--algorithms is a sweep flag; use `python -m bench sweep --algorithms ...`",
        id="run-with-algorithms",
    ),
    case(
        DEBUG + " --test-envs all",
        "one run needs explicit environments (comma-separated names); "
        "`python -m bench sweep --test-envs all` trains one run per environment",
        id="run-test-envs-all",
    ),
    case(DEBUG + " --test-envs pairs", "python -m bench sweep --test-envs pairs", id="run-pairs"),
    case(DEBUG + " --jobs 2", "--jobs is a sweep flag", id="run-with-jobs"),
    case(DEBUG + " --vectorise", "--vectorise is a sweep flag", id="run-with-vectorise"),
    case(DEBUG + " --dry-run", "--dry-run is a sweep flag", id="run-with-dry-run"),
    case(DEBUG + " --selection oracle", "--selection is a sweep flag", id="run-with-selection"),
    case(
        DEBUG + " --task mnist_ab",
        "--task is a transfer flag; use `python -m bench transfer --task ...`",
        id="run-with-task",
    ),
    case(DEBUG + " --recipes finetune", "--recipes is a transfer flag", id="run-with-recipes"),
    case(
        "run " + OUT,
        "one run needs --algorithm and/or --dataset; `python -m bench run` alone is the default",
        id="run-with-options-but-no-run",
    ),
    case(DEBUG + " --no-stack", "--no-stack is gone", id="no-stack-on-one-run"),
    case(SWEEP + " --no-stack", "training is always one run at a time", id="no-stack-on-sweep"),
    case(
        SWEEP + " --algorithm erm",
        "--algorithm names one run's algorithm; a sweep takes --algorithms",
        id="sweep-with-algorithm",
    ),
    case(SWEEP + " --trial-seed 1", "--trial-seed/--hparams-seed pick one run", id="sweep-seed"),
    case(SWEEP + " --task mnist_ab", "--task is a transfer flag", id="sweep-with-task"),
    case(
        "transfer --task mnist_ab --recipe scratch --n-trials 2 " + OUT,
        "--n-trials is a sweep flag; --task/--recipe name one run, a transfer sweep takes --tasks",
        id="transfer-run-with-sweep-flag",
    ),
    case(
        "transfer --task mnist_ab --recipe scratch --algorithms erm " + OUT,
        "--algorithms is not a transfer flag",
        id="transfer-with-algorithms",
    ),
    case("transfer --dataset mnist_ab " + OUT, "--dataset is not a transfer flag", id="t-dataset"),
    case(
        "transfer --task mnist_ab --recipes scratch " + OUT,
        "give one pair",
        id="transfer-mixes-run-and-sweep",
    ),
    case(
        "transfer --tasks mnist_ab --recipes scratch --trial-seed 1 " + OUT,
        "pick one run",
        id="transfer-sweep-with-seed",
    ),
    case("transfer " + OUT, "a transfer run needs both --task", id="transfer-without-task"),
]

CASES = (
    HPARAM_CASES
    + MNIST_CASES
    + IMAGE_CASES
    + GENOMIC_CASES
    + WEIGHTS_CASES
    + DASK_CASES
    + RUN_CASES
    + MODE_CASES
)


@pytest.mark.parametrize("argv, expected, setup", CASES)
def test_bad_input_ends_in_one_error_line(argv, expected, setup, tmp_path, monkeypatch, capfd):
    if setup is not None:
        setup(tmp_path, monkeypatch)
    start = time.monotonic()
    assert_one_error_line(shlex.split(_expand(argv, tmp_path)), _expand(expected, tmp_path), capfd)
    assert time.monotonic() - start < 10


# -- cases that need a live peer or inspect what was (not) written ---------------------------
def _serve(mode: str) -> tuple[socket.socket, int]:
    """A plain TCP service on loopback that closes each connection, or echoes what it receives."""
    server = socket.create_server(("127.0.0.1", 0))

    def handle(conn: socket.socket) -> None:
        with conn:
            while mode == "echo" and (data := conn.recv(4096)):
                conn.sendall(data)

    def accept() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:  # closed at the end of the test
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return server, server.getsockname()[1]


@pytest.mark.parametrize("mode", ["close", "echo"])
def test_dask_scheduler_address_of_a_non_dask_service_fails_fast(mode, tmp_path, capfd):
    server, port = _serve(mode)
    start = time.monotonic()
    try:
        argv = shlex.split(_expand(DASK, tmp_path)) + [f"tcp://127.0.0.1:{port}"]
        line = assert_one_error_line(argv, "cannot connect to a Dask scheduler", capfd)
    finally:
        server.close()
    assert f"127.0.0.1:{port}" in line and time.monotonic() - start < 10


def test_offline_download_fails_fast_even_when_the_connection_hangs(monkeypatch):
    from bench.downloads import unreachable

    release = threading.Event()

    def hang(*args, **kwargs):
        release.wait(30)
        raise OSError("released by the test")

    monkeypatch.setattr(socket, "create_connection", hang)
    start = time.monotonic()
    try:
        assert unreachable("example.invalid", 443, timeout_s=0.3) == "no answer within 0.3 s"
        assert time.monotonic() - start < 2
    finally:
        release.set()


def test_hub_names_are_single_safe_path_parts(tmp_path, monkeypatch):
    from bench.datasets.image_folder import fetch_from_hub

    _hub([("../evil", "a/b"), (".hidden", "nul\x00byte"), ("..\\up", "ok")])(tmp_path, monkeypatch)
    target = fetch_from_hub(_pacs_stub(), tmp_path / "data" / "pacs")
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*.jpg"))
    assert target == tmp_path / "data" / "pacs"
    assert written == [
        "data/pacs/_evil/a_b/0.jpg",
        "data/pacs/_up/ok/2.jpg",
        "data/pacs/hidden/nul_byte/1.jpg",
    ]


def _pacs_stub() -> object:
    """What fetch_from_hub reads of a dataset: its hub id and image size."""
    return types.SimpleNamespace(HUB_ID="flwrlabs/pacs", IMAGE_SIZE=8)


def test_files_without_an_image_extension_are_still_ignored(tmp_path, monkeypatch):
    _pacs("notes.txt", b"not an image")(tmp_path, monkeypatch)
    (tmp_path / "data" / "pacs" / "photo" / "dog" / "Thumbs.db").write_bytes(b"\x00\x01")
    data = DATASETS.get("pacs")(str(tmp_path / "data"), 0, size="tiny")
    assert len(data.envs["photo"]) == 7


def test_a_full_disk_is_one_line(tmp_path, monkeypatch, capfd):
    """ENOSPC while writing a record: the file and the reason, no traceback."""
    from bench import records

    def full(path, record):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(records, "append_record", full)
    assert_one_error_line(shlex.split(_expand(DEBUG, tmp_path)), "No space left on device", capfd)


def test_imagenet_weights_offline_fail_fast_in_one_line(tmp_path, monkeypatch, capfd):
    """Not in torchvision's cache and no network: one line naming the URL's file and the folder, in
    seconds."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    _offline(monkeypatch)
    argv = shlex.split(
        _expand(PACS, tmp_path).replace("--data-dir {tmp}/data".format(tmp=tmp_path), "")
    )
    start = time.monotonic()
    line = assert_one_error_line(
        argv + ["--hparams", '{"featurizer": "resnet18"}', "--weights", "imagenet"],
        "ImageNet weights for resnet18",
        capfd,
    )
    assert time.monotonic() - start < 20 and str(tmp_path / "torch") in line


def test_a_misspelt_recipe_gets_a_suggestion(tmp_path, capfd):
    line = assert_one_error_line(
        ["transfer", "--task", "mnist_ab", "--recipe", "finetun"], "Did you mean finetune", capfd
    )
    assert "Recipes: finetune" in line


@pytest.mark.parametrize("command", ["run", "sweep"])
def test_a_batch_that_does_not_fit_in_memory_is_one_line(command, tmp_path, monkeypatch, capfd):
    """A failed allocation (e.g. MMD at a full batch of 25,000) names the run and what to
    change (``--dry-run`` lists such runs instead: tests/test_plan.py)."""
    from bench.algorithms.erm import ERM

    def no_memory(self, minibatches, *args, **kwargs):
        raise RuntimeError(
            "[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate "
            "memory: you tried to allocate 2500000000 bytes. Error code 12"
        )

    monkeypatch.setattr(ERM, "update", no_memory)
    argv = (
        _expand(DEBUG, tmp_path)
        if command == "run"
        else f"sweep --algorithms erm --datasets debug --size tiny --n-trials 1 --jobs 1 "
        f"--steps 2 --no-progress --output-dir {tmp_path}/sweep"
    )
    line = assert_one_error_line(shlex.split(argv), "out of memory in ", capfd)
    assert "erm on debug: one allocation of 2.3 GiB failed; use a smaller batch" in line


def test_a_bug_is_not_passed_off_as_a_memory_problem(tmp_path, monkeypatch):
    from bench.algorithms.erm import ERM

    def bug(self, minibatches, *args, **kwargs):
        raise RuntimeError("mat1 and mat2 shapes cannot be multiplied")

    monkeypatch.setattr(ERM, "update", bug)
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        main(shlex.split(_expand(DEBUG, tmp_path)))
