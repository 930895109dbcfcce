"""Behavioural tests: invariance methods beat ERM when a spurious correlation flips at test time.

The toy is Colored MNIST in two dimensions: an invariant feature z predicts the label
with 75% accuracy in every environment (25% label noise); a spurious feature agrees with
the label with probability 0.9 / 0.8 in the two training environments and 0.1 at test.
ERM uses the spurious feature (test accuracy ~10-15%); IRM, V-REx and Fishr must not.
"""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.base import predictions
from bench.datasets.base import EnvData, Environment, MultiEnvDataset
from bench.hparams import Fixed, sample, space_for
from bench.seeding import torch_generator

SEEDS = (0, 1)


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


class ToyFlip(MultiEnvDataset):
    """Not registered: used directly, so the global dataset list is unchanged by the tests."""

    NAME = "toy_flip"
    ENVIRONMENTS = (
        Environment("e0.1", {"flip": 0.1}),
        Environment("e0.2", {"flip": 0.2}),
        Environment("test", {"flip": 0.9}),
    )
    TEST_ENVS = ("test",)
    INPUT_SHAPE = (2,)
    NUM_CLASSES = 2
    BINARY_LOGIT = True
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(16, "small"),
        "mlp_depth": Fixed(1, "one hidden layer"),
        "batch_size": Fixed(0, "full batch"),
        "lr": Fixed(1e-2, "fast"),
    }

    def build(self) -> dict[str, EnvData]:
        envs = {}
        for env in self.ENVIRONMENTS:
            g = torch_generator(self.NAME, self.data_seed, env.name)
            z = torch.randint(0, 2, (1000,), generator=g)
            y = z ^ (torch.rand(1000, generator=g) < 0.25).long()
            spurious = y ^ (torch.rand(1000, generator=g) < env.params["flip"]).long()
            x = torch.stack([2.0 * z - 1, 2.0 * spurious - 1], 1) + 0.1 * torch.randn(
                1000, 2, generator=g
            )
            envs[env.name] = EnvData(x, y)
        return envs


def train_and_test(name: str, seed: int, steps: int = 200, **overrides) -> float:
    torch.manual_seed(seed)
    data = ToyFlip(None, seed)
    hp = sample(space_for(ALGORITHMS.get(name), ToyFlip), name, ToyFlip.NAME, 0, 0)
    hp.update(overrides)
    algorithm = ALGORITHMS.get(name)(ToyFlip.INPUT_SHAPE, 1, 2, hp)
    envs, g = [data.envs[e] for e in ("e0.1", "e0.2")], torch.Generator().manual_seed(seed)
    for _ in range(steps):
        size = hp["batch_size"]
        algorithm.update(
            [
                env.batch(torch.randint(len(env), (size,), generator=g) if size else None)
                for env in envs
            ]
        )
    x, y = data.envs["test"].batch(None)
    algorithm.eval()
    with torch.no_grad():
        return (predictions(algorithm.predict(x)) == y).float().mean().item()


@pytest.fixture(scope="module")
def erm_accuracy() -> dict[int, float]:
    return {seed: train_and_test("erm", seed) for seed in SEEDS}


def test_erm_uses_the_spurious_feature(erm_accuracy):
    assert all(acc < 0.3 for acc in erm_accuracy.values()), erm_accuracy


@pytest.mark.parametrize(
    "name, overrides",
    [
        ("irm", {"irm_lambda": 1e3, "irm_penalty_anneal_iters": 50}),
        (
            "irm",
            {"irm_lambda": 1e3, "irm_penalty_anneal_iters": 50, "batch_size": 256},
        ),  # half-split estimator
        ("vrex", {"vrex_lambda": 1e3, "vrex_penalty_anneal_iters": 50}),
        ("fishr", {"lambda": 1e5, "penalty_anneal_iters": 20, "ema": 0.0}),
    ],
)
def test_invariance_method_beats_erm(name, overrides, erm_accuracy):
    for seed in SEEDS:
        acc = train_and_test(name, seed, **overrides)
        assert acc > 0.65 and acc > erm_accuracy[seed] + 0.4, (name, seed, acc, erm_accuracy[seed])


def opposite_spurious(seed: int, n: int = 1000) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Two environments whose spurious feature has opposite signs: their gradients start in
    conflict."""
    g = torch.Generator().manual_seed(seed)
    envs = []
    for sign in (1.0, -1.0):
        y = torch.randint(0, 2, (n,), generator=g)
        x = torch.stack([2.0 * y - 1, sign * (2.0 * y - 1)], 1) + 0.5 * torch.randn(
            n, 2, generator=g
        )
        envs.append((x, y))
    return envs


def grad_cos_trajectory(name: str, seed: int, steps: int = 150, **overrides) -> tuple[float, float]:
    """Mean ``grad_cos`` over the first and the last 10% of minibatch training."""
    torch.manual_seed(seed)
    hp = sample(space_for(ALGORITHMS.get(name), ToyFlip), name, ToyFlip.NAME, 0, 0)
    hp.update(overrides)
    algorithm = ALGORITHMS.get(name)((2,), 1, 2, hp)
    envs, g = opposite_spurious(seed), torch.Generator().manual_seed(seed)
    trace = []
    for _ in range(steps):
        minibatches = [
            (x[idx], y[idx]) for x, y in envs for idx in [torch.randint(len(y), (32,), generator=g)]
        ]
        trace.append(algorithm.update(minibatches)["grad_cos"])
    k = steps // 10
    return sum(trace[:k]) / k, sum(trace[-k:]) / k


def test_gradient_matching_raises_gradient_alignment_and_erm_does_not():
    for seed in SEEDS:
        erm_start, erm_end = grad_cos_trajectory("erm", seed)
        idgm_start, idgm_end = grad_cos_trajectory("idgm", seed, idgm_gamma=1.0)
        assert erm_end < 0.0, (
            seed,
            erm_start,
            erm_end,
        )  # ERM ends with conflicting environment gradients
        assert idgm_end > idgm_start + 0.3 and idgm_end > 0.9, (seed, idgm_start, idgm_end)
