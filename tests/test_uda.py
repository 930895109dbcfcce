"""Unsupervised domain adaptation (``uda_fraction``): part of each test environment is trained on
unlabeled and never evaluated; DANN and CORAL use it to undo a target shift DG cannot see."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from handmade import record, run
from test_invariance import ToyFlip  # the 2-d toy's network and optimiser settings

from bench import cli, records, runner
from bench.algorithms import ALGORITHMS
from bench.algorithms.base import Algorithm, predictions
from bench.algorithms.coral_mmd import CORAL
from bench.datasets import DATASETS
from bench.hparams import sample, space_for
from bench.leaderboard import _merge_tasks
from bench.protocol import protocol_card
from bench.sampling import UnlabeledStream, holdout_splits, unlabeled_splits
from bench.selection import algorithm_labels, dataset_labels
from bench.spec import RunSpec, RuntimeOptions, make_spec

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _splits(trial: int, fraction: float = 0.3):
    dataset = DATASETS.get("debug")(None, data_seed=trial, size="tiny")
    splits = holdout_splits(dataset, trial, 0.2)
    before = {e: {k: v.clone() for k, v in parts.items()} for e, parts in splits.items()}
    return before, splits, unlabeled_splits(splits, ("e0",), trial, fraction)


def test_the_unlabeled_split_is_disjoint_from_the_evaluated_part_and_seeded():
    before, after, unlabeled = _splits(0)
    in_, uda = set(after["e0"]["in"].tolist()), set(unlabeled["e0"].tolist())
    assert not in_ & uda and in_ | uda == set(before["e0"]["in"].tolist())
    assert len(uda) == int(len(before["e0"]["in"]) * 0.3)
    assert torch.equal(after["e0"]["out"], before["e0"]["out"])  # the oracle's split is DG's
    assert all(torch.equal(after[e]["in"], before[e]["in"]) for e in ("e1", "e2"))  # training
    assert torch.equal(_splits(0)[2]["e0"], unlabeled["e0"])
    assert not torch.equal(_splits(1)[2]["e0"], unlabeled["e0"])
    assert unlabeled_splits(after, ("e0",), 0, 0.0) == {}  # DG: nothing split off


def test_the_unlabeled_stream_is_a_pure_function_of_trial_env_and_step():
    dataset = DATASETS.get("debug")(None, data_seed=0, size="tiny")
    _, _, unlabeled = _splits(0)

    def stream(trial: int = 0) -> UnlabeledStream:
        return UnlabeledStream(dataset.envs, unlabeled, 8, trial)

    first = [stream().batches(t)[0] for t in range(6)]  # 6 * 8 > 24: crosses an epoch
    assert all(torch.equal(stream().batches(t)[0], first[t]) for t in (5, 2))  # any order
    assert len(first[0]) == 8 and not torch.equal(first[1], first[0])
    assert not torch.equal(stream(1).batches(0)[0], first[0])
    rows = {tuple(r) for r in dataset.envs["e0"].x[unlabeled["e0"]].tolist()}
    assert all(tuple(r) in rows for b in first for r in b.tolist())  # only unlabeled rows
    assert UnlabeledStream(dataset.envs, {}, 8, 0).batches(0) is None


def _spec(fraction: float, algorithm: str = "coral") -> RunSpec:
    return make_spec(algorithm, "debug", size="tiny", steps=4, eval_every=2, uda_fraction=fraction)


def test_a_uda_run_feeds_update_and_does_not_evaluate_the_unlabeled_part(tmp_path, monkeypatch):
    seen = []
    update = CORAL.update

    def spy(self, minibatches, unlabeled=None):
        seen.append(unlabeled)
        return update(self, minibatches, unlabeled)

    monkeypatch.setattr(CORAL, "update", spy)
    options = RuntimeOptions(output_dir=tmp_path, progress=False, threads=1)
    dg, uda = (runner.run(_spec(f), options) for f in (0.0, 0.3))
    assert seen[:4] == [None] * 4
    spec = _spec(0.3)
    assert len(seen[4]) == 1 and len(seen[4][0]) == spec.hparams["batch_size"]  # one test env
    x = DATASETS.get("debug")(None, data_seed=0, size="tiny").envs["e0"].x
    _, after, unlabeled = _splits(0)  # the runner's holdout (0.2) and trial
    fed = {tuple(r) for step in seen[4:] for r in step[0].tolist()}
    assert fed <= {tuple(r) for r in x[unlabeled["e0"]].tolist()}
    assert not fed & {tuple(r) for r in x[after["e0"]["in"]].tolist()}
    dg_eval, uda_eval = (
        records.read_records(o.run_dir / records.RESULTS)[-1]["eval"] for o in (dg, uda)
    )
    assert dg_eval["e0"]["in"]["n"] == 80 and uda_eval["e0"]["in"]["n"] == 56  # 24 unlabeled
    assert uda_eval["e0"]["out"]["n"] == 20 and set(uda_eval["e0"]) == {"in", "out"}
    info = json.loads((uda.run_dir / records.SPEC).read_text())
    assert info["spec"]["uda_fraction"] == 0.3 and info["protocol"]["task"].startswith("UDA (0.3")
    assert "uda_fraction" not in json.loads((dg.run_dir / records.SPEC).read_text())["spec"]


def test_the_run_id_changes_with_uda_fraction_and_dg_ids_are_unchanged():
    ids = {_spec(f).run_id for f in (0.0, 0.2, 0.3)}
    assert len(ids) == 3
    dg = _spec(0.0)
    assert "uda_fraction" not in dg.to_dict()  # DG specs hash as before the field existed
    assert RunSpec.from_dict(dg.to_dict()) == dg
    assert RunSpec.from_dict(_spec(0.2).to_dict()).uda_fraction == 0.2
    assert protocol_card({**dg.to_dict(), "hparams": dg.hparams})["task"] == "DG"


@pytest.mark.parametrize(
    "argv, message",
    [
        (
            ["run", "--algorithm", "dann", "--uda-fraction", "1"],
            "--uda-fraction must lie in [0, 1)",
        ),
        (["sweep", "--algorithms", "dann", "--uda-fraction", "-0.5"], "must lie in [0, 1)"),
        (["transfer", "--task", "mnist_ab", "--recipe", "scratch", "--uda-fraction", "0.2"], "not"),
        (["run", "--algorithm", "finetune", "--uda-fraction", "0.2"], "transfer recipe"),
    ],
)
def test_bad_uda_fractions_end_in_one_line(argv, message, capsys, tmp_path):
    assert cli.main([*argv, "--output-dir", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err


def test_boards_show_dg_and_uda_rows_of_one_algorithm_side_by_side():
    recs = [record(0, {"e0": (0.5, 0.5), "e1": (0.9, 0.9)})]
    runs = [run("coral", ("e0",), 0, 0, recs), run("coral", ("e0",), 0, 0, recs, uda_fraction=0.2)]
    runs[1] = dataclasses.replace(runs[1], run_id="coral-uda")  # same seeds: only the mode differs
    datasets = dataset_labels(runs)
    assert len(set(datasets.values())) == 1  # one table
    assert sorted(algorithm_labels(runs, datasets).values()) == ["coral", "coral + uda 0.2"]
    cards = [{"task": "UDA (0.2 of each test environment unlabeled in training)"}, {"task": "DG"}]
    assert _merge_tasks(cards)["task"].startswith("DG and UDA (0.2")


# --- the claim: with the target's unlabeled inputs, alignment undoes a shift DG cannot see ---


def shifted_target(seed: int, n: int = 1000) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two sources and a target. x0 = the label's sign + N(0, 1) (the core, ~84%); x1 = the sign
    + N(0, 0.1), a near-perfect shortcut in both sources, shifted by +3 in the target, where it
    says "class 1" for everything. The sources agree, so DG alignment has nothing to align."""
    g = torch.Generator().manual_seed(seed)
    envs = []
    for shift in (0.0, 0.0, 3.0):
        y = torch.randint(0, 2, (n,), generator=g)
        sign = 2.0 * y - 1
        x0, x1 = (
            sign + torch.randn(n, generator=g),
            sign + shift + 0.1 * torch.randn(n, generator=g),
        )
        envs.append((torch.stack([x0, x1], 1), y))
    return envs


def train(name: str, seed: int, uda: bool, steps: int = 300, **overrides) -> Algorithm:
    """Same seed, data and minibatches for DG and UDA; UDA also passes target inputs."""
    torch.manual_seed(seed)
    hp = {**sample(space_for(ALGORITHMS.get(name), ToyFlip), name, ToyFlip.NAME, 0, 0), **overrides}
    algorithm = ALGORITHMS.get(name)((2,), 1, 2, hp, num_unlabeled_envs=int(uda))
    *sources, (target_x, _) = shifted_target(seed)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        batches = [
            (x[i], y[i]) for x, y in sources for i in [torch.randint(len(y), (64,), generator=g)]
        ]
        unlabeled = [target_x[torch.randint(len(target_x), (64,), generator=g)]]
        algorithm.update(batches, unlabeled if uda else None)
    return algorithm.eval()


def target_accuracy(algorithm: Algorithm, seed: int) -> float:
    x, y = shifted_target(seed)[2]
    with torch.no_grad():
        return (predictions(algorithm.predict(x)) == y).float().mean().item()


@pytest.mark.parametrize(
    "name, overrides, margin",
    [
        ("coral", {"mmd_gamma": 10.0}, 0.15),
        pytest.param("dann", {"lambda": 10.0}, 0.25, marks=pytest.mark.slow),  # ~10 s
    ],
)
def test_alignment_with_the_unlabeled_target_beats_its_dg_counterpart(name, overrides, margin):
    for seed in (0, 1):
        dg = target_accuracy(train(name, seed, False, **overrides), seed)
        uda = target_accuracy(train(name, seed, True, **overrides), seed)
        assert dg < 0.6 and uda > dg + margin, (name, seed, dg, uda)  # DG follows the shortcut
