"""Behavioural tests: the distribution-matching and robust methods do what their papers claim, on
2-d toys.

- CORAL / MMD align the feature distributions of the training environments.
- DANN makes the environment hard to read from the features (against an independent probe).
- GroupDRO lowers the worst environment's loss by up-weighting it.
Each is compared with ERM trained on the same data, seed and network.
"""

from __future__ import annotations

import pytest
import torch
from sklearn.linear_model import LogisticRegression
from test_invariance import ToyFlip  # the 2-d toy's network and optimiser settings

from bench.algorithms import ALGORITHMS
from bench.algorithms.base import Algorithm, classification_loss, predictions
from bench.algorithms.coral_mmd import coral, mmd
from bench.hparams import sample, space_for

SEEDS = (0, 1)
Envs = list[tuple[torch.Tensor, torch.Tensor]]


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def shifted_envs(seed: int, n: int = 500) -> Envs:
    """The label is the sign of x0; the nuisance x1 is shifted by 3 in the second environment."""
    g = torch.Generator().manual_seed(seed)
    envs = []
    for shift in (0.0, 3.0):
        x = torch.randn(n, 2, generator=g)
        x[:, 1] += shift
        envs.append((x, (x[:, 0] > 0).long()))
    return envs


def conflicting_envs(seed: int, n: int = 1000) -> Envs:
    """Same inputs, different rules: sign of x0, or sign of x1 with 20% label noise (the harder
    one)."""
    g = torch.Generator().manual_seed(seed)
    xa, xb = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    yb = (xb[:, 1] > 0).long() ^ (torch.rand(n, generator=g) < 0.2).long()
    return [(xa, (xa[:, 0] > 0).long()), (xb, yb)]


def train(name: str, seed: int, envs: Envs, steps: int, **overrides) -> Algorithm:
    torch.manual_seed(seed)
    hp = sample(space_for(ALGORITHMS.get(name), ToyFlip), name, ToyFlip.NAME, 0, 0)
    hp.update(overrides)
    algorithm = ALGORITHMS.get(name)((2,), 1, len(envs), hp)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        algorithm.update(
            [
                (x[idx], y[idx])
                for x, y in envs
                for idx in [torch.randint(len(y), (64,), generator=g)]
            ]
        )
    return algorithm.eval()


def features(algorithm: Algorithm, envs: Envs) -> list[torch.Tensor]:
    with torch.no_grad():
        return [algorithm.featurizer(x) for x, _ in envs]


def accuracy(algorithm: Algorithm, envs: Envs) -> float:
    with torch.no_grad():
        return sum(
            (predictions(algorithm.predict(x)) == y).float().mean().item() for x, y in envs
        ) / len(envs)


def environment_probe_accuracy(algorithm: Algorithm, envs: Envs) -> float:
    """Held-out accuracy of a logistic regression that predicts the environment from the
    features."""
    feats = features(algorithm, envs)
    x = torch.cat(feats).numpy()
    d = torch.cat([torch.full((len(f),), i) for i, f in enumerate(feats)]).numpy()
    return LogisticRegression(max_iter=2000).fit(x[::2], d[::2]).score(x[1::2], d[1::2])


@pytest.mark.parametrize("name, distance", [("coral", coral), ("mmd", mmd)])
def test_feature_matching_aligns_environment_features(name, distance):
    for seed in SEEDS:
        envs = shifted_envs(seed)
        erm, method = train("erm", seed, envs, 300), train(name, seed, envs, 300, mmd_gamma=10.0)
        erm_gap, gap = (
            distance(*features(erm, envs)).item(),
            distance(*features(method, envs)).item(),
        )
        assert gap < 0.1 * erm_gap, (name, seed, gap, erm_gap)
        assert (
            environment_probe_accuracy(method, envs) < environment_probe_accuracy(erm, envs) - 0.2
        )
        assert accuracy(method, envs) > 0.9  # the task is still solved


@pytest.mark.slow  # trains for several seconds; the fast subset leaves it out
def test_dann_hides_the_environment_from_the_features():
    for seed in SEEDS:
        envs = shifted_envs(seed)
        erm, dann = train("erm", seed, envs, 600), train("dann", seed, envs, 600)
        erm_probe, dann_probe = (
            environment_probe_accuracy(erm, envs),
            environment_probe_accuracy(dann, envs),
        )
        assert erm_probe > 0.9 and dann_probe < erm_probe - 0.1, (seed, erm_probe, dann_probe)
        assert mmd(*features(dann, envs)).item() < 0.2 * mmd(*features(erm, envs)).item()
        assert accuracy(dann, envs) > 0.95


def test_group_dro_lowers_the_worst_environment_loss():
    for seed in SEEDS:
        envs = conflicting_envs(seed)
        erm, dro = (
            train("erm", seed, envs, 400),
            train("group_dro", seed, envs, 400, groupdro_eta=0.1),
        )
        with torch.no_grad():
            erm_losses = [classification_loss(erm.predict(x), y).item() for x, y in envs]
            dro_losses = [classification_loss(dro.predict(x), y).item() for x, y in envs]
        assert max(dro_losses) < max(erm_losses) - 0.05, (seed, erm_losses, dro_losses)
        assert dro.q[1] > 0.6  # the weight went to the harder environment
