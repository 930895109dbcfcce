"""Hyperparameter domains: what an override may be, how a space prints, how layers merge.

Written against surviving mutants of bench/hparams.py (docs/testing.md).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from bench.errors import UserError
from bench.hparams import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    Choice,
    Domain,
    Fixed,
    IntLogUniform,
    IntUniform,
    LogUniform,
    Param,
    Uniform,
    apply_overrides,
    sample,
    space_for,
)
from bench.seeding import rng

UNIT = Domain(0.0, 1.0)


@pytest.mark.parametrize(
    "param, value, expected",
    [
        (Param(1), 3, 3),
        (Param(1.0), 2, 2.0),
        (Param(True), False, False),
        (Uniform(0.5, domain=UNIT), 0.0, 0.0),
        (Uniform(0.5, domain=UNIT), 1.0, 1.0),
        (Uniform(0.5, domain=Domain(high=1.0)), -5.0, -5.0),
        (Uniform(0.5, domain=Domain(0.0)), 100.0, 100.0),
        (LogUniform(0.1, domain=POSITIVE), 1.0, 1.0),
        (LogUniform(0.1, domain=NON_NEGATIVE), 0.0, 0.0),
        (IntLogUniform(64, domain=NON_NEGATIVE), 0, 0),
        (IntLogUniform(64, domain=AT_LEAST_ONE), 1, 1),
    ],
)
def test_values_inside_the_domain_are_accepted(param, value, expected):
    got = param.validate("k", value)
    assert got == expected and type(got) is type(expected)


@pytest.mark.parametrize(
    "param, value, message",
    [
        (Param(1), True, "'k' must be int, got True"),
        (Param(1), 1.5, "'k' must be int"),
        (Param(1.0), "x", "'k' must be float, got 'x'"),
        (Param(1.0), math.nan, "'k' must be finite, got nan"),
        (Uniform(0.5, domain=UNIT), -0.1, r"'k' must be in \[0, 1\], got -0.1"),
        (Uniform(0.5, domain=UNIT), 1.1, r"'k' must be in \[0, 1\], got 1.1"),
        (Uniform(0.5), "x", "'k' must be float"),
        (LogUniform(0.1, domain=POSITIVE), 0.0, "'k' must be > 0, got 0.0"),
        (LogUniform(0.1, domain=NON_NEGATIVE), -1.0, "'k' must be >= 0, got -1.0"),
        (LogUniform(0.1), "x", "'k' must be float"),
        (IntLogUniform(64, domain=AT_LEAST_ONE), 0, "'k' must be >= 1, got 0"),
        (IntLogUniform(64), 2.0, "'k' must be int"),
        (IntLogUniform(64), True, "'k' must be int"),
        (Choice("a", options=("a", "b")), "c", r"'k' must be one of \['a', 'b'\], got 'c'"),
    ],
)
def test_values_outside_the_domain_raise_naming_key_value_and_domain(param, value, message):
    with pytest.raises(UserError, match=message):
        param.validate("k", value)


@pytest.mark.parametrize(
    "param, text",
    [
        (Fixed(3), "fixed"),
        (Choice("a", options=("a", "b")), "choice['a', 'b']"),
        (Uniform(0.95, low=0.9, high=0.99), "U(0.9, 0.99)"),
        (IntUniform(1500, low=0, high=5000), "int(U(0, 5000))"),
        (LogUniform(1e-3, low=10**-4.5, high=10**-2.5), "10^U(-4.5, -2.5)"),
        (IntLogUniform(64, low=8, high=512), "int(2^U(3, 9))"),
    ],
)
def test_describe(param, text):
    assert param.describe() == text


@pytest.mark.parametrize(
    "param, low, high, kind",
    [
        (Uniform(0.0, low=5.0, high=6.0), 5.0, 6.0, float),
        (IntUniform(0, low=5, high=9), 5, 9, int),
        (LogUniform(1.0, low=100.0, high=1000.0), 100.0, 1000.0, float),
        (IntLogUniform(8, low=8, high=512), 8, 512, int),
    ],
)
def test_draws_lie_in_the_search_range_and_have_the_right_type(param, low, high, kind):
    draws = [param.sample(np.random.default_rng(seed)) for seed in range(200)]
    assert all(type(d) is kind and low <= d <= high for d in draws)
    assert max(draws) - min(draws) > (high - low) / 2  # spread over the range, not one end


def test_sample_is_defaults_at_seed_zero_and_else_one_named_stream_per_key():
    space = {"b": Uniform(0.5), "a": Fixed(7)}
    assert sample(space, "alg", "ds", 0, 3) == {"a": 7, "b": 0.5}
    drawn = sample(space, "alg", "ds", 2, 3)
    assert drawn == sample({"b": Uniform(0.5)}, "alg", "ds", 2, 3) | {"a": 7}
    assert drawn["b"] == Uniform(0.5).sample(rng("hparams", "alg", "ds", 2, 3, "b"))
    other_trial, other_seed = sample(space, "alg", "ds", 2, 4), sample(space, "alg", "ds", 3, 3)
    assert drawn["b"] != other_trial["b"] != other_seed["b"]


def test_apply_overrides_validates_and_names_unknown_keys():
    space = {"lr": LogUniform(0.1, domain=POSITIVE), "steps": IntLogUniform(8, domain=AT_LEAST_ONE)}
    assert apply_overrides(space, {"lr": 0.1, "steps": 8}, {"lr": 1}) == {"lr": 1.0, "steps": 8}
    with pytest.raises(UserError, match="unknown hparam.*nope, zz; valid keys: lr, steps"):
        apply_overrides(space, {}, {"zz": 1, "nope": 2})
    with pytest.raises(UserError, match="'steps' must be >= 1"):
        apply_overrides(space, {}, {"steps": 0})


class _Base:
    HPARAMS = {"lr": Fixed(1.0), "x": Fixed(1)}


class _Alg(_Base):
    NAME = "alg"
    HPARAMS = {"x": Fixed(2)}


class _Variant(_Alg):
    NAME = "variant"


class _Data:
    NAME = "other"
    FEATURIZER = "mlp"
    HPARAMS = {"augment": Fixed(True)}
    HPARAM_OVERRIDES = {"lr": Fixed(5.0), "absent": Fixed(0)}


class _Paper(_Data):
    NAME = "paper"
    ALGORITHM_HPARAMS = {"alg": {"x": Fixed(3), "lr": Fixed(4.0)}}


def test_space_layers_algorithm_mro_featurizer_dataset_then_paper_protocol():
    space = space_for(_Alg, _Data)
    assert (space["x"].default, space["lr"].default) == (2, 5.0)
    assert space["featurizer"].default == "mlp" and space["augment"].default is True
    assert "absent" not in space and "mlp_width" in space
    paper = space_for(_Alg, _Paper)
    assert (paper["x"].default, paper["lr"].default) == (3, 4.0)
    # a protocol names the methods it tuned: a subclass under another name is not one of them
    variant = space_for(_Variant, _Paper)
    assert (variant["x"].default, variant["lr"].default) == (2, 5.0)
