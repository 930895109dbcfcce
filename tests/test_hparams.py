import re

import pytest

from bench import hparams as hp
from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.errors import UserError


def _space():
    return hp.space_for(ALGORITHMS.get("erm"), DATASETS.get("cmnist"))


def test_seed_zero_gives_defaults():
    space = _space()
    values = hp.sample(space, "erm", "cmnist", 0, 3)
    assert values == {k: p.default for k, p in space.items()}
    assert (
        values["lr"] == 1e-3 and values["batch_size"] == 64 and values["featurizer"] == "mnist_cnn"
    )


def test_random_draws_in_range_reproducible_and_per_trial():
    space = _space()
    draws = [hp.sample(space, "erm", "cmnist", 5, t) for t in range(20)]
    assert hp.sample(space, "erm", "cmnist", 5, 0) == draws[0]
    lrs = [d["lr"] for d in draws]
    assert len(set(lrs)) == 20, "each trial replicates the random search with its own draw"
    assert all(10**-4.5 <= lr <= 10**-2.5 for lr in lrs)
    assert all(8 <= d["batch_size"] <= 512 and isinstance(d["batch_size"], int) for d in draws)


def test_adding_a_key_does_not_change_the_others():
    space = _space()
    bigger = dict(space, extra=hp.Uniform(0.5, "new", low=0, high=1))
    a = hp.sample(space, "erm", "cmnist", 7, 1)
    b = hp.sample(bigger, "erm", "cmnist", 7, 1)
    assert {k: b[k] for k in a} == a


def test_overrides_validated():
    space = _space()
    values = hp.sample(space, "erm", "cmnist", 0, 0)
    assert hp.apply_overrides(space, values, {"lr": 0.01})["lr"] == 0.01
    assert (
        hp.apply_overrides(space, values, {"weight_decay": 0})["weight_decay"] == 0.0
    )  # int coerced to float
    with pytest.raises(UserError, match="valid keys"):
        hp.apply_overrides(space, values, {"learning_rate": 0.1})
    with pytest.raises(UserError, match="> 0"):
        hp.apply_overrides(space, values, {"lr": -1.0})
    with pytest.raises(UserError, match="must be float"):
        hp.apply_overrides(space, values, {"lr": "fast"})
    with pytest.raises(UserError, match="one of"):
        hp.apply_overrides(space, values, {"init": "orthogonal"})


def test_dataset_overrides_apply_to_the_protocol():
    space = hp.space_for(ALGORITHMS.get("erm"), DATASETS.get("cmnist_irm"))
    values = hp.sample(space, "erm", "cmnist_irm", 0, 0)
    assert (values["mlp_width"], values["l2"], values["lr"], values["batch_size"]) == (
        256,
        0.001,
        0.001,
        0,
    )


def _spaces():
    """(algorithm, dataset, space) for every registered pair whose space can be built."""
    for algorithm in ALGORITHMS.names():
        for dataset in DATASETS.names():
            try:
                space = hp.space_for(ALGORITHMS.get(algorithm), DATASETS.get(dataset))
            except UserError:
                continue
            yield algorithm, dataset, space


def test_every_numeric_hparam_declares_a_domain_holding_its_default():
    checked = 0
    for algorithm, dataset, space in _spaces():
        for key, param in space.items():
            if isinstance(param.default, bool) or not isinstance(param.default, (int, float)):
                continue
            where = f"{algorithm} x {dataset}: {key}"
            assert param.domain is not None, f"{where}: declare a domain where it is first declared"
            assert param.default in param.domain, (
                f"{where}: default {param.default} not {param.domain}"
            )
            checked += 1
    assert checked > 1000


def test_a_redefinition_without_a_domain_keeps_the_first_declared_one():
    space = hp.space_for(ALGORITHMS.get("erm"), DATASETS.get("cmnist_irm"))  # Fixed l2, mlp_*, ...
    values = hp.sample(space, "erm", "cmnist_irm", 0, 0)
    for key, value, domain in [
        ("l2", -5, ">= 0"),
        ("lr", 0.0, "> 0"),
        ("batch_size", -3, ">= 0"),
        ("mlp_width", 0, ">= 1"),
        ("mlp_dropout", 5, "in [0, 1)"),
    ]:
        with pytest.raises(UserError, match=rf"'{key}' must be {re.escape(domain)}, got"):
            hp.apply_overrides(space, values, {key: value})
    assert hp.apply_overrides(space, values, {"batch_size": 0, "l2": 0})["l2"] == 0.0


@pytest.mark.parametrize("value", [float("nan"), float("inf"), "0.1", True, None])
def test_non_numbers_and_non_finite_values_are_refused(value):
    space = _space()
    with pytest.raises(UserError, match="'lr' must be"):
        hp.apply_overrides(space, hp.sample(space, "erm", "cmnist", 0, 0), {"lr": value})


def test_domain_bounds_and_their_text():
    assert str(hp.POSITIVE) == "> 0" and 0 not in hp.POSITIVE and 1e-12 in hp.POSITIVE
    assert str(hp.DROPOUT) == "in [0, 1)" and 0 in hp.DROPOUT and 1 not in hp.DROPOUT
    fraction = hp.Domain(0, 1, open_low=True)
    assert str(fraction) == "in (0, 1]" and 1 in fraction and 0 not in fraction
