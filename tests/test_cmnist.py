"""Colored MNIST protocols on real MNIST: sizes, label noise and colour agreement at the declared
rates."""

import math

import pytest
import torch

from bench.datasets import DATASETS


def _colour_agreement(env):
    x, y = env.batch(None)
    colour = (x[:, 1].flatten(1).sum(1) > x[:, 0].flatten(1).sum(1)).long()  # 1 = green channel lit
    return (colour == y).float().mean().item(), len(y)


def _within(observed, p, n, sigmas=4.0):
    return abs(observed - p) <= sigmas * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize(
    "name, sizes",
    [
        ("cmnist", {"+90%": 23334, "+80%": 23333, "-90%": 23333}),
        ("cmnist_irm", {"train_0.2": 25000, "train_0.1": 25000, "test": 10000}),
    ],
)
def test_colour_agrees_with_label_at_declared_rate(data_dir, name, sizes):
    cls = DATASETS.get(name)
    data = cls(data_dir, data_seed=0)
    for env in cls.ENVIRONMENTS:
        assert len(data.envs[env.name]) == sizes[env.name]
        agreement, n = _colour_agreement(data.envs[env.name])
        assert _within(agreement, 1 - env.params["colour_flip"], n), (env.name, agreement)


def test_label_noise_is_25_percent(data_dir):
    from bench.datasets.files import load_mnist

    data = DATASETS.get("cmnist_irm")(data_dir, data_seed=0)
    x, y = data.envs["test"].batch(None)  # the test env is MNIST train[50000:] in order
    digits = torch.from_numpy(load_mnist(data_dir)[1][50000:].astype("int64"))
    agreement = ((digits < 5).long() == y).float().mean().item()
    assert _within(agreement, 0.75, len(y))


def test_irm_protocol_images_and_grayscale_oracle(data_dir):
    colour = DATASETS.get("cmnist_irm")(data_dir, data_seed=1)
    gray = DATASETS.get("cmnist_irm_gray")(data_dir, data_seed=1)
    x, y = colour.envs["train_0.1"].batch(None)
    xg, yg = gray.envs["train_0.1"].batch(None)
    assert x.shape[1:] == (2, 14, 14) and xg.shape[1:] == (1, 14, 14)
    assert torch.equal(y, yg) and torch.equal(x.sum(1, keepdim=True), xg)
    assert (x.min(), x.max()) == (0.0, 1.0)
    assert ((x[:, 0] > 0).flatten(1).any(1) & (x[:, 1] > 0).flatten(1).any(1)).sum() == 0, (
        "one channel zeroed"
    )


def test_data_seed_redraws_colours_but_not_images(data_dir):
    a = DATASETS.get("cmnist_irm")(data_dir, data_seed=0).envs["test"].batch(None)
    b = DATASETS.get("cmnist_irm")(data_dir, data_seed=1).envs["test"].batch(None)
    assert torch.equal(a[0].sum(1), b[0].sum(1)) and not torch.equal(a[1], b[1])


def test_missing_mnist_names_paths_and_flag(tmp_path):
    from bench.errors import DataNotFoundError

    with pytest.raises(DataNotFoundError) as err:
        DATASETS.get("cmnist")(str(tmp_path), data_seed=0)
    msg = str(err.value)
    assert str(tmp_path / "mnist.npz") in msg and "--data-dir" in msg and "--download" in msg
