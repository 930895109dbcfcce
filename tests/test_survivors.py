"""Tests written to kill hand-planted mutants that survived the suite (issue 22).

Each test pins a behaviour the science depends on: the exact annealing step, Fishr's
penalty computed by hand, and crash safety of the records file.
"""

from __future__ import annotations

import copy
import json
import os

import pytest
import torch

from bench import records
from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.hparams import sample, space_for

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread

ANNEAL = 3
WEIGHT = 5000.0
# (algorithm, weight key, anneal key, weight before annealing in DomainBed's schedule)
ANNEALED = [
    ("irm", "irm_lambda", "irm_penalty_anneal_iters", 1.0),
    ("vrex", "vrex_lambda", "vrex_penalty_anneal_iters", 1.0),
    ("fishr", "lambda", "penalty_anneal_iters", 0.0),
]


def make(name: str, n_envs: int = 2, **overrides):
    """The algorithm on debug-sized inputs (10 features, 2 classes), seeded."""
    hp = sample(space_for(ALGORITHMS.get(name), DATASETS.get("debug")), name, "debug", 0, 0)
    hp.update({"l2": 0.0, "batch_size": 16, **overrides})
    torch.manual_seed(0)
    return ALGORITHMS.get(name)((10,), 2, n_envs, hp)


def minibatches(step: int, sizes=(16, 16)) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(step)
    out = []
    for e, n in enumerate(sizes):
        x = torch.randn(n, 10, generator=g) + e
        y = (x[:, 0] + 0.5 * torch.randn(n, generator=g) > e).long()
        out.append((x, y))
    return out


def phase(stats: dict[str, float], before: float, irm_code: bool) -> str:
    """Which penalty weight w the update's loss was built with (l2 = 0): "before" or "after".

    DomainBed: loss = nll + w * penalty. IRM code: the same, divided by w when w > 1.
    """

    def loss_with(w: float) -> float:
        loss = stats["nll"] + w * stats["penalty"]
        return loss / w if irm_code and w > 1 else loss

    for name, w in (("before", before), ("after", WEIGHT)):
        if stats["loss"] == pytest.approx(loss_with(w), rel=1e-5, abs=1e-7):
            return name
    return f"neither: {stats}"


@pytest.mark.parametrize("name, weight_key, anneal_key, before", ANNEALED)
def test_domainbed_schedule_switches_weight_and_resets_adam_at_the_anneal_step(
    name, weight_key, anneal_key, before
):
    """DomainBed: w = before while update_count < anneal_iters, then lambda; Adam re-created
    exactly at update_count == anneal_iters (algorithms.py, IRM/VREx/Fishr.update)."""
    alg = make(name, irm_code=False, ema=0.0, **{weight_key: WEIGHT, anneal_key: ANNEAL})
    phases, resets = [], []
    for step in range(ANNEAL + 3):
        optimizer = alg.optimizer
        stats = alg.update(minibatches(step))
        assert WEIGHT * abs(stats["penalty"]) > 1e-2, "penalty too small to tell the weights apart"
        phases.append(phase(stats, before, irm_code=False))
        resets.append(alg.optimizer is not optimizer)
    assert phases == ["before"] * ANNEAL + ["after"] * 3
    assert resets == [False] * ANNEAL + [True, False, False]


@pytest.mark.parametrize("name, weight_key, anneal_key, before", ANNEALED)
def test_irm_code_schedule_switches_weight_at_the_anneal_step_without_reset(
    name, weight_key, anneal_key, before
):
    """IRM code (main.py): w = 1 while step < penalty_anneal_iters, then penalty_weight with the
    loss divided by it; one Adam for the whole run."""
    alg = make(name, irm_code=True, ema=0.0, **{weight_key: WEIGHT, anneal_key: ANNEAL})
    optimizer = alg.optimizer
    phases = []
    for step in range(ANNEAL + 3):
        stats = alg.update(minibatches(step))
        assert WEIGHT * abs(stats["penalty"]) > 1e-2, "penalty too small to tell the weights apart"
        phases.append(phase(stats, 1.0, irm_code=True))
        assert alg.optimizer is optimizer
    assert phases == ["before"] * ANNEAL + ["after"] * 3


def hand_fishr_penalty(featurizer, head, batches, summed: bool) -> float:
    """Fishr's penalty with plain loops: per-sample head gradients of each example's own
    cross-entropy, centred per-environment variance (divided by n, as DomainBed's
    ``_get_grads_var_per_domain``), squared distance to the mean variance over environments,
    averaged over coordinates and environments (DomainBed ``l2_between_dicts``) or summed
    (the Fishr Colored MNIST code)."""
    variances = []
    for x, y in batches:
        features = featurizer(x).detach()
        grads = []
        for i in range(len(y)):
            loss = torch.nn.functional.cross_entropy(head(features[i : i + 1]), y[i : i + 1])
            per_param = torch.autograd.grad(loss, head.parameters())
            grads.append(torch.cat([g.flatten() for g in per_param]))
        grads = torch.stack(grads).double()
        centred = grads - grads.sum(dim=0) / len(y)
        variances.append((centred**2).sum(dim=0) / len(y))
    mean = sum(variances) / len(variances)
    squared = [(v - mean) ** 2 for v in variances]
    total = sum(float(s.sum()) for s in squared)
    return total if summed else total / (len(squared) * squared[0].numel())


@pytest.mark.parametrize("irm_code", [False, True])
def test_fishr_penalty_matches_a_hand_computation(irm_code):
    """Centred variances, environments of unequal size, no EMA: the reported penalty equals
    the hand-computed one at the parameters before the update."""
    alg = make("fishr", n_envs=3, irm_code=irm_code, ema=0.0)
    batches = minibatches(7, sizes=(5, 8, 11))
    before = copy.deepcopy(alg)
    expected = hand_fishr_penalty(before.featurizer, before.classifier, batches, summed=irm_code)
    assert alg.update(batches)["penalty"] == pytest.approx(expected, rel=1e-4)


def test_append_record_flushes_and_fsyncs_the_records_file_every_time(tmp_path, monkeypatch):
    """A crash after append_record returns must not lose the line: it is written out and
    fsync'ed on the records file itself, at every append."""
    path = tmp_path / records.RESULTS
    real_fsync = os.fsync
    synced = []

    def spy(fd):
        same_file = os.path.samestat(os.fstat(fd), os.stat(path))
        synced.append((same_file, path.read_text().count("\n")))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", spy)
    for step in range(3):
        records.append_record(path, {"step": step})
    assert synced == [(True, 1), (True, 2), (True, 3)]


def test_torn_last_record_is_skipped(tmp_path):
    path = tmp_path / records.RESULTS
    path.write_text("".join(json.dumps({"step": s}) + "\n" for s in range(3)) + '{"step": 3, "ev')
    assert records.read_records(path) == [{"step": 0}, {"step": 1}, {"step": 2}]


def test_corrupt_middle_record_raises_with_its_line_number(tmp_path):
    """Only the last line can be torn by a crash; damage elsewhere must not be skipped."""
    path = tmp_path / records.RESULTS
    path.write_text('{"step": 0}\n{"step": 1\n{"step": 2}\n')
    with pytest.raises(ValueError, match=r"\bline 2\b"):
        records.read_records(path)
