"""The runner's fast path: bf16 precision, split skipping, full-batch caching, channels_last."""

import dataclasses
import gc
import random
import resource
import weakref

import numpy as np
import pytest
import torch

from bench import records, runner, sampling
from bench.algorithms import ALGORITHMS
from bench.checkpoint import capture_rng_state, load_checkpoint, restore_rng_state
from bench.datasets.files import data_roots
from bench.errors import UserError
from bench.evaluation import skipped_splits
from bench.execution import freed_memory_kept
from bench.spec import RuntimeOptions, make_spec, resolve_hparams


def _options(tmp_path, name, **kw):
    return RuntimeOptions(output_dir=tmp_path / name, progress=False, threads=1, **kw)


def _numbers(outcome):
    out = []
    for rec in records.read_records(outcome.run_dir / records.RESULTS):
        rec.pop("wall_s")
        out.append(rec)
    return out


def test_bf16_run_finishes_and_records_its_precision(tmp_path):
    fp32 = make_spec("erm", "debug", size="tiny", steps=41)
    bf16 = make_spec("erm", "debug", size="tiny", steps=41, precision="bf16")
    assert make_spec("erm", "debug", size="tiny", steps=41, precision="fp32").run_id == fp32.run_id
    assert bf16.run_id != fp32.run_id
    outcome = runner.run(bf16, _options(tmp_path, "bf16"))
    assert outcome.status == "ok"
    info = records.read_json(outcome.run_dir / records.SPEC)
    assert info["spec"]["precision"] == "bf16" and fp32.to_dict()["precision"] == "fp32"
    test_in = outcome.last_record["eval"]["e0"]["in"]["acc"]
    assert test_in is not None and test_in > 0.7, "bf16 training still learns the debug signal"
    with pytest.raises(UserError, match="precision"):
        make_spec("erm", "debug", size="tiny", precision="fp16")


def test_needed_splits_skip_only_training_in_splits_and_leave_numbers_unchanged(tmp_path):
    spec = make_spec("erm", "debug", test_envs=["e1"], size="tiny", steps=21)
    needed = runner.run(spec, _options(tmp_path, "needed"))
    full = runner.run(spec, _options(tmp_path, "all", eval_splits="all"))
    for a, b in zip(_numbers(needed), _numbers(full)):
        for env, parts in b["eval"].items():
            for part, score in parts.items():
                if env != "e1" and part == "in":
                    assert a["eval"][env][part] == {"acc": None, "n": score["n"], "skipped": True}
                else:
                    assert a["eval"][env][part] == score
        assert a["train"] == b["train"]


def test_without_holdout_training_in_splits_are_kept():
    splits = {
        "a": {"in": torch.arange(5), "out": torch.arange(0)},
        "t": {"in": torch.arange(5), "out": torch.arange(2)},
    }
    assert skipped_splits(splits, ["t"], "needed") == set()
    splits["a"]["out"] = torch.arange(2)
    assert skipped_splits(splits, ["t"], "needed") == {("a", "in")}
    assert skipped_splits(splits, ["t"], "all") == set()


def test_full_batch_run_matches_a_hand_written_full_batch_loop(tmp_path):
    spec = make_spec(
        "erm", "debug", size="tiny", steps=5, eval_every=1, overrides={"batch_size": 0, "l2": 0.01}
    )
    outcome = runner.run(spec, _options(tmp_path, "fb"))
    recorded = [r["train"]["loss"] for r in records.read_records(outcome.run_dir / records.RESULTS)]

    dataset = runner.load_dataset("debug", None, spec.data_seed, "tiny")
    splits = sampling.holdout_splits(dataset, spec.trial_seed, spec.holdout_fraction)
    runner._seed_everything(spec)
    train = [n for n in dataset.envs if n not in spec.test_envs]
    algorithm = ALGORITHMS.get("erm")(
        dataset.INPUT_SHAPE, dataset.num_outputs(), len(train), resolve_hparams(spec)
    )
    expected = [
        algorithm.update([dataset.envs[n].batch(splits[n]["in"]) for n in train])["loss"]
        for _ in range(5)
    ]
    assert recorded == pytest.approx(expected, rel=1e-6)


def test_channels_last_only_for_conv_nets_on_cpu():
    cpu = torch.device("cpu")
    conv, mlp = (
        torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3)),
        torch.nn.Sequential(torch.nn.Linear(3, 2)),
    )
    assert runner.wants_channels_last(conv, cpu, None) and not runner.wants_channels_last(
        mlp, cpu, None
    )
    assert not runner.wants_channels_last(conv, cpu, False)


def _have_mnist():
    return any((root / "mnist.npz").exists() for root in data_roots(None))


@pytest.mark.skipif(not _have_mnist(), reason="needs mnist.npz (../shared/data or $BENCH_DATA)")
@pytest.mark.slow
def test_channels_last_keeps_fp32_cmnist_numbers_within_tolerance(tmp_path):
    spec = make_spec("erm", "cmnist", size="tiny", steps=2, eval_every=1)
    base = _options(tmp_path, "x")
    fast = _numbers(
        runner.run(spec, dataclasses.replace(base, output_dir=tmp_path / "cl", channels_last=True))
    )
    plain = _numbers(
        runner.run(
            spec, dataclasses.replace(base, output_dir=tmp_path / "nchw", channels_last=False)
        )
    )
    # Step 0 is one forward pass: only summation order differs. After an Adam step, parameters
    # whose gradient is ~0 may move by +-lr on rounding alone, so allow more there.
    assert fast[0]["train"] == pytest.approx(plain[0]["train"], rel=1e-5)
    assert fast[1]["train"] == pytest.approx(plain[1]["train"], rel=1e-3)
    for a, b in zip(fast, plain):
        for env, parts in b["eval"].items():
            for part, score in parts.items():
                if score["acc"] is not None:  # a prediction may flip on a near-tie
                    assert abs(a["eval"][env][part]["acc"] - score["acc"]) * score["n"] <= 2


@pytest.mark.slow
def test_cached_listing_is_identical_and_skips_torch(tmp_path):
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    first = subprocess.run(
        [sys.executable, "-m", "bench", "list"], env=env, capture_output=True, text=True, check=True
    ).stdout
    probe = (
        "import sys; from bench.catalog import listing; print(listing(), end=''); assert "
        "'torch' not in sys.modules"
    )
    again = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert again.returncode == 0, again.stderr
    assert again.stdout.rstrip("\n") == first.rstrip("\n") and "erm" in first and "cmnist" in first


def test_records_keep_confusion_counts_and_mcc(tmp_path):
    from bench.evaluation import mcc

    spec = make_spec("erm", "debug", size="tiny", steps=3)
    outcome = runner.run(spec, _options(tmp_path, "cm"))
    split = outcome.last_record["eval"]["e1"]["out"]
    assert sum(c for _, _, c in split["confusion"]) == split["n"]
    assert split["acc"] == pytest.approx(
        sum(c for t, p, c in split["confusion"] if t == p) / split["n"]
    )
    assert split["mcc"] == pytest.approx(mcc(split["confusion"]))
    assert mcc([[0, 0, 40], [0, 1, 10], [1, 0, 5], [1, 1, 45]]) == pytest.approx(
        1750 / (55 * 50 * 50 * 45) ** 0.5
    )


def _page_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _resident_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


def test_freed_tensor_memory_is_reused_without_page_faults_then_returned():
    """Inside a run, a full-batch step's activations (tens of MB each) come back from the heap, not
    from fresh kernel pages (before bench.execution.freed_memory_kept every such tensor
    re-faulted); after the run the memory goes back to the kernel."""
    n = 16 * 2**20  # 64 MB of float32, above glibc's largest mmap threshold (32 MB)
    with freed_memory_kept() as applies:
        if not applies:
            pytest.skip("not glibc: the allocator setting does not apply")
        for _ in range(3):  # the heap grows to its steady size (small allocations may split it)
            torch.ones(n).sum()
        before = _page_faults()
        for _ in range(3):
            torch.ones(n).sum()
        assert _page_faults() - before < 2000  # 3 x 16,384 pages when each is a fresh mmap
        kept = _resident_bytes()
    assert kept - _resident_bytes() > 48 * 2**20  # the freed 64 MB left with the block


def test_after_a_run_the_collector_skips_long_lived_objects_and_the_run_is_still_freed(tmp_path):
    """Training freezes the process's long-lived objects once (``freeze_long_lived_objects``), so
    full collections no longer walk torch's ~320,000; every run's own objects are still freed
    when it ends, the first run's included."""
    made = []
    prepare = runner.prepare

    def watched(*args, **kwargs):
        ctx = prepare(*args, **kwargs)
        made.append((weakref.ref(ctx), weakref.ref(ctx.algorithm)))
        return ctx

    runner.prepare = watched
    try:
        for trial in range(2):
            spec = make_spec("erm", "debug", size="tiny", steps=3, trial_seed=trial)
            assert runner.run(spec, _options(tmp_path, str(trial))).status == "ok"
    finally:
        runner.prepare = prepare
    assert gc.get_freeze_count() > 100_000
    assert len(made) == 2 and all(ref() is None for pair in made for ref in pair)


def _draws() -> tuple:
    return random.random(), float(np.random.rand()), torch.rand(2).tolist()


@pytest.mark.parametrize("form", ["tensor", "tuple before 2026-11-30"])
def test_every_rng_resumes_from_a_checkpoint_file(tmp_path, form):
    """The checkpoint holds Python's ``random`` state as one tensor (cheaper to pickle than 625
    ints); checkpoints written with the tuple still resume."""
    cpu = torch.device("cpu")
    state = capture_rng_state(cpu)
    if form != "tensor":
        state["python"] = random.getstate()
    expected = _draws()
    path = tmp_path / records.CHECKPOINT
    records.write_torch(path, {"algorithm": {}, "rng": state, "step": 0, "wall_s": 0.0})
    restore_rng_state(load_checkpoint(path)["rng"], cpu)
    assert _draws() == expected
