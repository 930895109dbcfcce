"""Multi-task learning's claims, checked: sharing helps related small-data tasks and hurts
adversarially related ones; Evgeniou & Pontil's optimum; PCGrad's projection; gradient cosine."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.multitask.method import METHODS, flat_gradients, pairwise_cosines
from bench.multitask.methods.pcgrad import project_conflicts
from bench.multitask.runner import load_task_set, train
from bench.multitask.spec import make_mtl_spec
from bench.multitask.tasks import Task


def linear_hparams(**changes):
    """Full-batch hparams of a linear model (depth 0), changed by ``changes``."""
    base = {"lr": 0.01, "weight_decay": 0.0, "batch_size": 0, "trunk": "mlp", "width": 1}
    return {**base, "depth": 0, "lambda1": 1.0, "lambda2": 0.0, **changes}


def mean_test_error(method: str, tasks: str, trial: int, tmp_path) -> float:
    spec = make_mtl_spec(method, tasks, trial_seed=trial, steps=300, eval_every=300)
    outcome = train(spec, tmp_path / spec.run_id, load_task_set(tasks, None, trial, "full"))
    return float(np.mean([v["test"] for v in outcome.last_record["eval"].values()]))


@pytest.mark.parametrize("trial", [0, 1])
def test_sharing_helps_related_and_hurts_adversarial_tasks(trial, tmp_path, one_thread):
    """Same seeds, same inputs and hparams; only how the tasks relate changes."""
    related = {
        m: mean_test_error(m, "linear_related", trial, tmp_path)
        for m in ("single_task", "evgeniou_pontil")
    }
    adversarial = {
        m: mean_test_error(m, "linear_adversarial", trial, tmp_path)
        for m in ("single_task", "evgeniou_pontil")
    }
    assert related["evgeniou_pontil"] < 0.5 * related["single_task"], related
    assert adversarial["evgeniou_pontil"] > 1.1 * adversarial["single_task"], adversarial


def closed_form(xs, ys, lambda1, lambda2):
    """argmin of mean_j ||X_j (w0 + v_j) - y_j||^2 / n_j + lambda1/T sum ||v_j||^2
    + lambda2 ||w0||^2, from its normal equations over theta = [w0, v_1, ..., v_T]."""
    t, d = len(xs), xs[0].shape[1]
    hessian, rhs = np.zeros((d * (t + 1), d * (t + 1))), np.zeros(d * (t + 1))
    for j, (x, y) in enumerate(zip(xs, ys)):
        lift = np.zeros((len(x), d * (t + 1)))  # X_j acting on w0 and on v_j
        lift[:, :d] = x
        lift[:, d * (j + 1) : d * (j + 2)] = x
        hessian += lift.T @ lift / (t * len(x))
        rhs += lift.T @ y / (t * len(x))
    hessian[:d, :d] += lambda2 * np.eye(d)
    hessian[d:, d:] += lambda1 / t * np.eye(d * t)
    theta = np.linalg.solve(hessian, rhs)
    return theta[:d], theta[d:].reshape(t, d)


def test_evgeniou_pontil_reaches_the_convex_optimum(one_thread):
    gen = np.random.default_rng(0)
    xs = [gen.standard_normal((6, 3)) for _ in range(3)]
    ys = [x @ gen.standard_normal(3) for x in xs]
    hparams = linear_hparams(lr=0.1, lambda1=0.7, lambda2=0.2)
    tasks = [Task(f"t{j}", "regression") for j in range(3)]
    method = METHODS.get("evgeniou_pontil")(tasks, (3,), hparams, steps=800)
    batches = [
        (torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32))
        for x, y in zip(xs, ys)
    ]
    for _ in range(800):
        method.update(batches)
    w0, v = closed_form(xs, ys, 0.7, 0.2)
    assert np.allclose(method.w0.detach().numpy(), w0, atol=2e-3)
    assert np.allclose(method.v.detach().numpy(), v, atol=2e-3)


def test_pcgrad_removes_conflicting_components_by_hand():
    g1, g2 = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # g1 . g2 = -1: they conflict
    p1, p2 = project_conflicts([g1, g2], [[1], [0]])
    # g1 - (-1 / 2) g2 = (0.5, 0.5); g2 - (-1 / 1) g1 = (0, 1)
    assert torch.allclose(p1, torch.tensor([0.5, 0.5])) and torch.allclose(
        p2, torch.tensor([0.0, 1.0])
    )
    assert float(p1 @ g2) == pytest.approx(0.0) and float(p2 @ g1) == pytest.approx(0.0)
    g3 = torch.tensor([1.0, 1.0])  # agrees with g1: left alone
    q1, q3 = project_conflicts([g1, g3], [[1], [0]])
    assert torch.equal(q1, g1) and torch.equal(q3, g3)


def _two_tasks(sign: float):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(32, 5, generator=gen)
    y = x @ torch.randn(5, generator=gen)
    return [(x, y), (x, sign * y)]


@pytest.mark.parametrize("method", ["hard_sharing", "evgeniou_pontil", "pcgrad"])
def test_gradient_cosine_is_one_for_identical_tasks(method, one_thread):
    hparams = linear_hparams(width=8, depth=1)
    torch.manual_seed(0)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    net = METHODS.get(method)(tasks, (5,), hparams, steps=5)
    if method != "evgeniou_pontil":  # identical tasks need identical heads to have equal gradients
        net.heads[1].load_state_dict(net.heads[0].state_dict())
    for _ in range(5):
        assert net.update(_two_tasks(1.0))["grad_cos"]["a|b"] == pytest.approx(1.0, abs=1e-5)


def test_gradient_cosine_is_minus_one_for_opposite_tasks(one_thread):
    """y_b = -y_a on the same inputs: at w = 0 the shared gradients are exactly opposite."""
    hparams = linear_hparams()
    tasks = [Task("a", "regression"), Task("b", "regression")]
    net = METHODS.get("evgeniou_pontil")(tasks, (5,), hparams, steps=1)
    assert net.update(_two_tasks(-1.0))["grad_cos"]["a|b"] == pytest.approx(-1.0, abs=1e-5)
    assert pairwise_cosines([torch.ones(3), -torch.ones(3)], ["a", "b"]) == {
        "a|b": pytest.approx(-1.0)
    }


def test_pcgrad_steps_the_trunk_along_the_projected_mean(one_thread):
    hparams = linear_hparams(width=8, depth=1)
    torch.manual_seed(0)
    tasks = [Task("a", "regression"), Task("b", "regression")]
    net = METHODS.get("pcgrad")(tasks, (5,), hparams, steps=1)
    net.heads[1].load_state_dict(net.heads[0].state_dict())
    batches = [(x, 10 * y) for x, y in _two_tasks(-1.0)]  # same head, opposite large targets
    trunk = net.shared_parameters()
    grads = flat_gradients(net.task_losses(batches), trunk)
    assert float(grads[0] @ grads[1]) < 0  # the tasks conflict on the trunk
    expected = torch.stack(project_conflicts(grads, [[1], [0]])).mean(0)
    net.update(batches)
    assert torch.allclose(torch.cat([p.grad.reshape(-1) for p in trunk]), expected, atol=1e-6)
