"""Behavioural tests of the DomainBed algorithms of batch A (issue 17), on the 2-d toys of
test_paper_claims.py, each compared with ERM trained on the same data, seed and network.

- ANDMask / SAND-mask step only along gradient components whose signs agree across
  environments (hand-made gradients, then a real network's first step).
- IGA shrinks the spread of the per-environment gradients.
- IB-ERM / IB-IRM shrink the variance of the features.
- SelfReg, CAD and CondCAD pull same-class features of different environments together;
  CAD and CondCAD also hide the environment from a probe (their I(D; Z) bottleneck).
- CausIRL-CORAL / -MMD shrink the distance between two mixtures of the environments.
- EQRM lowers a high quantile (and the worst) of the per-environment risks.
- RDM shrinks the MMD between the worst environment's loss distribution and the pooled one.
- IB's anneal, EQRM's burn-in and RDM's anneal switch on at the declared step, with
  DomainBed's fresh Adam.
Every algorithm of the batch has a test. Not told apart: CAD and CondCAD (both pass the same
test; on these toys the label-conditional bottleneck has the same effect).
"""

from __future__ import annotations

import functools

import pytest
import torch
from test_paper_claims import (
    SEEDS,
    Envs,
    accuracy,
    conflicting_envs,
    environment_probe_accuracy,
    features,
    shifted_envs,
    train,
)

from bench.algorithms.and_mask import and_mask, masked_mean, sand_mask
from bench.algorithms.base import Algorithm, classification_loss
from bench.algorithms.causirl import mixture_penalty
from bench.algorithms.coral_mmd import coral, mmd
from bench.algorithms.eqrm import kde_quantile
from bench.algorithms.ib import feature_variance
from bench.algorithms.rdm import scalar_mmd

STEPS = 300
ENVS = {"shifted": shifted_envs, "conflicting": conflicting_envs}

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


@functools.cache
def baseline(name: str, toy: str, seed: int) -> Algorithm:
    """ERM (or IRM) on a toy, trained once per module: several tests compare with it."""
    return train(name, seed, ENVS[toy](seed), STEPS)


def env_gradients(algorithm: Algorithm, envs: Envs) -> torch.Tensor:
    """[envs, parameters]: each environment's full-data loss gradient."""
    params = list(algorithm.network.parameters())
    rows = []
    for x, y in envs:
        grads = torch.autograd.grad(classification_loss(algorithm.predict(x), y), params)
        rows.append(torch.cat([g.reshape(-1) for g in grads]))
    return torch.stack(rows)


# -- ANDMask / SAND-mask --------------------------------------------------------------------


def test_and_mask_keeps_only_sign_consistent_components_of_hand_made_gradients():
    grads = torch.tensor([[1.0, 2.0, -1.0, 0.5], [3.0, -2.0, -1.0, 0.0]])  # two environments
    assert and_mask(grads, 1.0).tolist() == [1.0, 0.0, 1.0, 0.0]
    assert and_mask(grads, 0.5).tolist() == [1.0, 0.0, 1.0, 1.0]  # a zero counts half
    # the mean gradient where kept, rescaled by 1 / (fraction kept)
    assert masked_mean(grads, and_mask(grads, 1.0)).tolist() == pytest.approx([4.0, 0, -2.0, 0])


def test_sand_mask_closes_on_disagreement_and_on_spread_out_magnitudes():
    grads = torch.tensor(  # three environments; columns: agree, disagree, agree but spread, agree
        [[1.0, 1.0, 1.0, 1.0], [1.0, -1.0, 2.0, 1.1], [1.0, 1.0, 3.0, 0.9]]
    )
    mask = sand_mask(grads, tau=0.5, k=1.0)
    assert mask[1] == 0.0  # sign agreement 1/3 < tau
    assert mask[0] == pytest.approx(1.0) and mask[3] == pytest.approx(1.0)
    assert mask[2] == pytest.approx(torch.tanh(torch.tensor(0.5)).item())  # (1 - tau) / var 1


@pytest.mark.parametrize("name, overrides", [("and_mask", {}), ("sand_mask", {"tau": 0.5})])
def test_gradient_masks_move_only_parameters_whose_environment_gradients_agree(name, overrides):
    envs = conflicting_envs(0)
    for algorithm_name, kwargs in (("erm", {}), (name, overrides)):
        before = train(algorithm_name, 0, envs, 0, **kwargs).train()
        agree = (env_gradients(before, envs).sign().prod(dim=0) > 0).tolist()
        start = torch.cat([p.detach().reshape(-1) for p in before.parameters()])
        before.update(envs)  # one step on the full environments
        moved = (torch.cat([p.detach().reshape(-1) for p in before.parameters()]) != start).tolist()
        assert not all(agree), "the toy must have conflicting components"
        if algorithm_name == "erm":  # moves components the environments disagree on
            assert any(m and not a for m, a in zip(moved, agree))
        else:
            assert moved == agree, (name, moved, agree)


# -- IGA ------------------------------------------------------------------------------------


def gradient_spread(algorithm: Algorithm, envs: Envs) -> float:
    """Trace of the covariance of the per-environment gradients (IGA's penalty)."""
    grads = env_gradients(algorithm.train(), envs)
    return (grads - grads.mean(dim=0)).pow(2).sum().item()


def test_iga_shrinks_the_spread_of_environment_gradients():
    for seed in SEEDS:
        envs = conflicting_envs(seed)
        erm, iga = (
            baseline("erm", "conflicting", seed),
            train("iga", seed, envs, STEPS, penalty=1.0),
        )
        assert gradient_spread(iga, envs) < 0.2 * gradient_spread(erm, envs), seed
        assert accuracy(iga, envs) > 0.65  # above chance: not a constant predictor


# -- IB-ERM / IB-IRM ------------------------------------------------------------------------


@pytest.mark.parametrize("name, reference", [("ib_erm", "erm"), ("ib_irm", "irm")])
def test_information_bottleneck_shrinks_feature_variance(name, reference):
    for seed in SEEDS:
        envs = shifted_envs(seed)
        plain = baseline(reference, "shifted", seed)
        ib = train(name, seed, envs, STEPS, ib_lambda=1.0, ib_penalty_anneal_iters=0)
        plain_var, ib_var = (feature_variance(features(a, envs)).item() for a in (plain, ib))
        assert ib_var < 0.2 * plain_var, (seed, ib_var, plain_var)
        assert accuracy(ib, envs) > 0.95


# -- SelfReg / CAD / CondCAD ------------------------------------------------------------------


def cross_environment_gap(algorithm: Algorithm, envs: Envs) -> float:
    """Distance between the two environments' feature means of one class, relative to the
    distance between the two classes' means (averaged over classes and environments)."""
    means = [
        [f[y == c].mean(dim=0) for c in (0, 1)]
        for f, (_, y) in zip(features(algorithm, envs), envs)
    ]
    gap = sum((means[0][c] - means[1][c]).norm() for c in (0, 1))
    between = sum((means[e][0] - means[e][1]).norm() for e in (0, 1))
    return (gap / between).item()


@pytest.mark.parametrize(
    "name, overrides", [("self_reg", {}), ("cad", {"lmbda": 1.0}), ("cond_cad", {"lmbda": 1.0})]
)
def test_same_class_features_of_different_environments_are_pulled_together(name, overrides):
    for seed in SEEDS:
        envs = shifted_envs(seed)
        erm, method = baseline("erm", "shifted", seed), train(name, seed, envs, STEPS, **overrides)
        erm_gap, gap = cross_environment_gap(erm, envs), cross_environment_gap(method, envs)
        assert gap < 0.4 * erm_gap, (seed, gap, erm_gap)
        assert accuracy(method, envs) > 0.9
        if name != "self_reg":  # the domain bottleneck: the environment is no longer readable
            probe, erm_probe = (environment_probe_accuracy(a, envs) for a in (method, erm))
            assert probe < erm_probe - 0.2, (seed, probe, erm_probe)


# -- CausIRL --------------------------------------------------------------------------------


@pytest.mark.parametrize(  # the biased MMD estimate has a floor of about 7 / rows (7 kernels)
    "name, distance, ratio", [("causirl_coral", coral, 0.05), ("causirl_mmd", mmd, 0.5)]
)
def test_causirl_aligns_mixtures_of_the_environments(name, distance, ratio):
    def mixture_distance(algorithm: Algorithm, envs: Envs) -> float:
        """CausIRL's penalty with the cuts at 3/4 and 1/4 of 400 rows: 75/25 vs 25/75 mixtures."""
        first, second = (f[:400] for f in features(algorithm, envs))
        return mixture_penalty([first, second], distance, cuts=[300, 100]).item()

    for seed in SEEDS:
        envs = shifted_envs(seed)
        erm, method = (
            baseline("erm", "shifted", seed),
            train(name, seed, envs, STEPS, mmd_gamma=10.0),
        )
        assert mixture_distance(method, envs) < ratio * mixture_distance(erm, envs), seed
        assert accuracy(method, envs) > 0.85


# -- EQRM -----------------------------------------------------------------------------------


def env_risks(algorithm: Algorithm, envs: Envs) -> torch.Tensor:
    with torch.no_grad():
        return torch.stack([classification_loss(algorithm.predict(x), y) for x, y in envs])


def test_eqrm_lowers_the_high_quantile_of_environment_risks():
    for seed in SEEDS:
        envs = conflicting_envs(seed)
        erm = baseline("erm", "conflicting", seed)
        eqrm = train(
            "eqrm", seed, envs, STEPS, eqrm_quantile=0.9, eqrm_burnin_iters=0, eqrm_lr=1e-2
        )
        erm_risks, eqrm_risks = env_risks(erm, envs), env_risks(eqrm, envs)
        assert kde_quantile(eqrm_risks, 0.9) < kde_quantile(erm_risks, 0.9) - 0.15, seed
        assert eqrm_risks.max() < erm_risks.max() - 0.05, (seed, eqrm_risks, erm_risks)


def test_kde_quantile_is_the_in_graph_bisection_and_solves_the_kde_cdf():
    """Same value and gradient as bisecting in the graph (DomainBed), and CDF(q) = alpha."""
    risks = torch.tensor([0.3, 0.9, 0.5], requires_grad=True)
    q = kde_quantile(risks, 0.8)
    (grad,) = torch.autograd.grad(q, risks)

    data = torch.sort(risks).values
    bw = 1.06 * data.std() * 3**-0.2
    z = torch.distributions.Normal(0.0, 1.0).icdf(torch.tensor(0.8))
    low, high = data[0] + bw * z, data[-1] + bw * z
    kde = torch.distributions.Normal(data.detach(), bw.detach())
    for _ in range(32):
        mid = (low + high) / 2
        low, high = (low, mid) if kde.cdf(mid).mean() > 0.8 else (mid, high)
    reference = (low + high) / 2
    assert q.item() == pytest.approx(reference.item(), abs=1e-5)
    assert grad.tolist() == pytest.approx(
        torch.autograd.grad(reference, risks)[0].tolist(), abs=1e-4
    )
    assert kde.cdf(q.detach()).mean().item() == pytest.approx(0.8, abs=1e-5)


# -- RDM ------------------------------------------------------------------------------------


def risk_distribution_gap(algorithm: Algorithm, envs: Envs) -> float:
    """RDM's matching penalty on the full environments."""
    with torch.no_grad():
        losses = [classification_loss(algorithm.predict(x), y, "none") for x, y in envs]
    worst = losses[int(torch.stack([l.mean() for l in losses]).argmax())]
    return scalar_mmd(worst, torch.cat(losses)).item()


def test_rdm_matches_the_worst_environment_risk_distribution_to_the_pooled_one():
    for seed in SEEDS:
        envs = conflicting_envs(seed)
        erm = baseline("erm", "conflicting", seed)
        rdm = train(
            "rdm",
            seed,
            envs,
            STEPS,
            rdm_lambda=5.0,
            rdm_penalty_anneal_iters=0,
            rdm_lr=1e-2,
            variance_weight=0.0,  # the MMD alone
        )
        gap, erm_gap = risk_distribution_gap(rdm, envs), risk_distribution_gap(erm, envs)
        assert gap < 0.2 * erm_gap, (seed, gap, erm_gap)
        assert accuracy(rdm, envs) > 0.65


# -- schedules: what persists across steps switches at the declared step ----------------------


def _batches(envs: Envs) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x[:64], y[:64]) for x, y in envs]


def _adam_steps(optimizer: torch.optim.Optimizer) -> int:
    return int(next(iter(optimizer.state.values()))["step"]) if optimizer.state else 0


def test_ib_bottleneck_switches_on_at_its_anneal_step_with_a_fresh_adam():
    envs = shifted_envs(0)
    ib = train("ib_erm", 0, envs, 0, ib_penalty_anneal_iters=2, ib_lambda=1.0).train()
    stats = [ib.update(_batches(envs)) for _ in range(3)]
    assert [s["loss"] == s["nll"] for s in stats] == [True, True, False]
    assert _adam_steps(ib.optimizer) == 1  # DomainBed re-creates Adam at the anneal step


@pytest.mark.parametrize(
    "name, overrides, second",
    [
        ("eqrm", {"eqrm_burnin_iters": 2}, "quantile_optimizer"),
        ("rdm", {"rdm_penalty_anneal_iters": 2}, "matching_optimizer"),
    ],
)
def test_the_post_anneal_adam_takes_over_at_the_declared_step(name, overrides, second):
    envs = conflicting_envs(0)
    algorithm = train(name, 0, envs, 0, **overrides).train()
    steps = []
    for _ in range(3):
        algorithm.update(_batches(envs))
        steps.append((_adam_steps(algorithm.optimizer), _adam_steps(getattr(algorithm, second))))
    assert steps == [(1, 0), (2, 0), (2, 1)]
