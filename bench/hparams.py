"""Hyperparameter spaces: each key has a default, a random-search distribution and a doc.

``hparams_seed == 0`` gives the defaults. Otherwise every key is drawn from its own
stream keyed on (algorithm, dataset, hparams_seed, trial_seed, key), so adding a key
never changes the values drawn for the others (DomainBed's convention, per key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Mapping

import numpy as np

from bench.errors import UserError
from bench.seeding import rng


@dataclass(frozen=True)
class Domain:
    """The values a numeric hparam may take, checked on every override (defaults included in tests).

    Bounds are inclusive unless ``open_low``/``open_high``; e.g. a learning rate is ``> 0``.
    """

    low: float = -math.inf
    high: float = math.inf
    open_low: bool = False
    open_high: bool = False

    def __contains__(self, value: float) -> bool:
        above = value > self.low if self.open_low else value >= self.low
        below = value < self.high if self.open_high else value <= self.high
        return above and below

    def __str__(self) -> str:
        if self.high == math.inf:
            return f"{'>' if self.open_low else '>='} {self.low:g}"
        left, right = "(" if self.open_low else "[", ")" if self.open_high else "]"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


POSITIVE = Domain(0, open_low=True)  # learning rates, step sizes, Beta parameters
NON_NEGATIVE = Domain(0)  # penalty weights, weight decay, step counts where 0 = off
AT_LEAST_ONE = Domain(1)  # widths, depths, kernel sizes
DROPOUT = Domain(0, 1, open_high=True)  # a probability that must leave something


@dataclass(frozen=True)
class Param:
    """Base: a fixed value. Subclasses add a search distribution.

    ``domain`` bounds every numeric value (``None`` for strings and booleans); a later
    layer of ``space_for`` that redefines a key without a domain keeps the earlier one.
    """

    default: Any
    doc: str = ""
    domain: Domain | None = None

    def sample(self, gen: np.random.Generator) -> Any:
        return self.default

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise UserError."""
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UserError(f"hparam {key!r} must be {expected.__name__}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"hparam {key!r} must be finite, got {value!r}")
        if self.domain is not None and value not in self.domain:
            raise UserError(f"hparam {key!r} must be {self.domain}, got {value!r}")
        return value

    def describe(self) -> str:
        return "fixed"


class Fixed(Param):
    """Not searched; an override may set any value of the same type inside the domain."""


@dataclass(frozen=True)
class Choice(Param):
    options: tuple = ()

    def sample(self, gen: np.random.Generator) -> Any:
        return self.options[int(gen.integers(len(self.options)))]

    def validate(self, key: str, value: Any) -> Any:
        value = super().validate(key, value)
        if value not in self.options:
            raise UserError(f"hparam {key!r} must be one of {list(self.options)}, got {value!r}")
        return value

    def describe(self) -> str:
        return f"choice{list(self.options)}"


class Setting(Choice):
    """A choice that random search leaves at its default: it names a protocol, not a tuning knob."""

    def sample(self, gen: np.random.Generator) -> Any:
        return self.default

    def describe(self) -> str:
        return f"fixed, one of {list(self.options)}"


@dataclass(frozen=True)
class Uniform(Param):
    """``U(low, high)``; ``domain`` (not the search range) bounds overrides."""

    low: float = 0.0
    high: float = 1.0

    def sample(self, gen: np.random.Generator) -> Any:
        return float(gen.uniform(self.low, self.high))

    def describe(self) -> str:
        return f"U({self.low:g}, {self.high:g})"


@dataclass(frozen=True)
class IntUniform(Uniform):
    """``int(U(low, high))``, e.g. Fishr's annealing steps in DomainBed."""

    def sample(self, gen: np.random.Generator) -> Any:
        return int(super().sample(gen))

    def describe(self) -> str:
        return "int(" + super().describe() + ")"


@dataclass(frozen=True)
class LogUniform(Param):
    """``base ** U(log(low), log(high))``; ``domain`` (not the search range) bounds overrides."""

    low: float = 1e-5
    high: float = 1e-1
    base: float = 10.0

    def sample(self, gen: np.random.Generator) -> Any:
        exponent = gen.uniform(math.log(self.low, self.base), math.log(self.high, self.base))
        return float(self.base**exponent)

    def describe(self) -> str:
        lo, hi = math.log(self.low, self.base), math.log(self.high, self.base)
        return f"{self.base:g}^U({lo:g}, {hi:g})"


@dataclass(frozen=True)
class IntLogUniform(LogUniform):
    """``int(base ** U(log(low), log(high)))``, e.g. DomainBed's batch size 2^U(3, 9)."""

    base: float = 2.0

    def sample(self, gen: np.random.Generator) -> Any:
        return int(super().sample(gen))

    def describe(self) -> str:
        return "int(" + super().describe() + ")"


Space = dict[str, Param]


def sample(
    space: Mapping[str, Param], algorithm: str, dataset: str, hparams_seed: int, trial_seed: int
) -> dict[str, Any]:
    """Defaults for ``hparams_seed == 0``, else one independent draw per key."""
    if hparams_seed == 0:
        return {key: param.default for key, param in sorted(space.items())}
    return {
        key: param.sample(rng("hparams", algorithm, dataset, hparams_seed, trial_seed, key))
        for key, param in sorted(space.items())
    }


def apply_overrides(
    space: Mapping[str, Param], values: dict[str, Any], overrides: Mapping[str, Any]
) -> dict[str, Any]:
    """Validated overrides: unknown keys and out-of-domain values raise UserError."""
    unknown = sorted(set(overrides) - set(space))
    if unknown:
        raise UserError(
            f"unknown hparam(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(space))}"
        )
    out = dict(values)
    for key, value in overrides.items():
        out[key] = space[key].validate(key, value)
    return out


def space_for(algorithm_cls: type, dataset_cls: type, featurizer: str | None = None) -> Space:
    """The merged space of one (algorithm, dataset) pair, most specific layer last.

    Layers, in order:
    1. the algorithm's ``HPARAMS`` along its MRO (the base's lr, weight_decay, ... first);
    2. the featurizer's keys (``featurizer`` overrides the dataset's network);
    3. the dataset's own ``HPARAMS`` (e.g. augmentation);
    4. the dataset's ``HPARAM_OVERRIDES``, only for keys the space already has (e.g. an lr
       range for small images);
    5. the dataset's ``ALGORITHM_HPARAMS[algorithm name]``: the protocol a paper or a search
       tuned for this method on this data (IRM on cmnist_irm, V-REx on spurious_toy). Settings
       of "algorithm A on dataset D" live there and nowhere else, matched by exact registered
       name (a subclass of IRM is a different method and is not tuned by IRM's protocol).
    A key keeps the domain of its first declaration unless a later layer declares one.
    """
    from bench.networks import featurizer_space

    space: Space = {}
    for klass in reversed(algorithm_cls.__mro__):
        _layer(space, klass.__dict__.get("HPARAMS", {}))
    featurizer = featurizer or dataset_cls.FEATURIZER
    space["featurizer"] = Fixed(featurizer, "featurizer network (see bench/networks.py)")
    _layer(space, featurizer_space(featurizer))
    _layer(space, getattr(dataset_cls, "HPARAMS", {}))  # the dataset's own keys, e.g. augmentation
    _layer(space, {k: v for k, v in dataset_cls.HPARAM_OVERRIDES.items() if k in space})
    protocols = getattr(dataset_cls, "ALGORITHM_HPARAMS", {})
    _layer(space, protocols.get(getattr(algorithm_cls, "NAME", None), {}))
    return space


def _layer(space: Space, params: Mapping[str, Param]) -> None:
    """Put ``params`` over ``space``; a redefinition without a domain keeps the earlier domain."""
    for key, param in params.items():
        earlier = space.get(key)
        if param.domain is None and earlier is not None and earlier.domain is not None:
            param = replace(param, domain=earlier.domain)
        space[key] = param
