"""Hyperparameter spaces: each key has a default, a random-search distribution and a doc.

``hparams_seed == 0`` gives the defaults. Otherwise every key is drawn from its own
stream keyed on (algorithm, dataset, hparams_seed, trial_seed, key), so adding a key
never changes the values drawn for the others (DomainBed's convention, per key).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from bench.errors import UserError
from bench.seeding import rng


@dataclass(frozen=True)
class Param:
    """Base: a fixed value. Subclasses add a search distribution and a domain check."""

    default: Any
    doc: str = ""

    def sample(self, gen: np.random.Generator) -> Any:
        return self.default

    def validate(self, key: str, value: Any) -> Any:
        """Return ``value`` coerced to this parameter's type, or raise UserError."""
        expected = type(self.default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
            raise UserError(f"hparam {key!r} must be {expected.__name__}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"hparam {key!r} must be finite, got {value!r}")
        return value

    def describe(self) -> str:
        return "fixed"


class Fixed(Param):
    """Not searched; an override may still set any value of the same type."""


@dataclass(frozen=True)
class Choice(Param):
    options: tuple = ()

    def sample(self, gen: np.random.Generator) -> Any:
        return self.options[int(gen.integers(len(self.options)))]

    def validate(self, key: str, value: Any) -> Any:
        if value not in self.options:
            raise UserError(f"hparam {key!r} must be one of {list(self.options)}, got {value!r}")
        return value

    def describe(self) -> str:
        return f"choice{list(self.options)}"


@dataclass(frozen=True)
class Uniform(Param):
    low: float = 0.0
    high: float = 1.0
    minimum: float | None = None  # hard domain bound for overrides (search range is low..high)
    maximum: float | None = None

    def sample(self, gen: np.random.Generator) -> Any:
        return float(gen.uniform(self.low, self.high))

    def validate(self, key: str, value: Any) -> Any:
        value = super().validate(key, value)
        if (self.minimum is not None and value < self.minimum) or (self.maximum is not None and value > self.maximum):
            raise UserError(f"hparam {key!r} must lie in [{self.minimum}, {self.maximum}], got {value!r}")
        return value

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
    """``base ** U(log(low), log(high))``; overrides must be positive (or zero if allow_zero)."""

    low: float = 1e-5
    high: float = 1e-1
    base: float = 10.0
    allow_zero: bool = False

    def sample(self, gen: np.random.Generator) -> Any:
        exponent = gen.uniform(math.log(self.low, self.base), math.log(self.high, self.base))
        return float(self.base**exponent)

    def validate(self, key: str, value: Any) -> Any:
        value = super().validate(key, value)
        if value < 0 or (value == 0 and not self.allow_zero):
            raise UserError(f"hparam {key!r} must be {'>= 0' if self.allow_zero else '> 0'}, got {value!r}")
        return value

    def describe(self) -> str:
        lo, hi = math.log(self.low, self.base), math.log(self.high, self.base)
        return f"{self.base:g}^U({lo:g}, {hi:g})"


@dataclass(frozen=True)
class IntLogUniform(LogUniform):
    """``int(base ** U(log(low), log(high)))``, e.g. DomainBed's batch size 2^U(3, 9)."""

    base: float = 2.0
    minimum: int = 1

    def sample(self, gen: np.random.Generator) -> Any:
        return int(super().sample(gen))

    def validate(self, key: str, value: Any) -> Any:
        value = Param.validate(self, key, value)
        if value < self.minimum:
            raise UserError(f"hparam {key!r} must be an integer >= {self.minimum}, got {value!r}")
        return value

    def describe(self) -> str:
        return "int(" + super().describe() + ")"


Space = dict[str, Param]


def sample(space: Mapping[str, Param], algorithm: str, dataset: str, hparams_seed: int, trial_seed: int) -> dict[str, Any]:
    """Defaults for ``hparams_seed == 0``, else one independent draw per key."""
    if hparams_seed == 0:
        return {key: param.default for key, param in sorted(space.items())}
    return {
        key: param.sample(rng("hparams", algorithm, dataset, hparams_seed, trial_seed, key))
        for key, param in sorted(space.items())
    }


def apply_overrides(space: Mapping[str, Param], values: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Validated overrides: unknown keys and out-of-domain values raise UserError."""
    unknown = sorted(set(overrides) - set(space))
    if unknown:
        raise UserError(f"unknown hparam(s) {', '.join(unknown)}; valid keys: {', '.join(sorted(space))}")
    out = dict(values)
    for key, value in overrides.items():
        out[key] = space[key].validate(key, value)
    return out


def space_for(algorithm_cls: type, dataset_cls: type, featurizer: str | None = None) -> Space:
    """The merged space of one (algorithm, dataset) pair, most specific layer last.

    Layers: the algorithm's HPARAMS along its MRO (base keys lr, weight_decay, ...),
    the dataset's featurizer keys, the dataset's HPARAM_OVERRIDES (only for keys the
    space has, e.g. an lr range for small images), the dataset's ALGORITHM_HPARAMS
    for this algorithm (its tuned settings per method, e.g. spurious_toy), then the algorithm's own
    DATASET_HPARAMS for this dataset (a paper's protocol, e.g. IRM on cmnist_irm).
    ``featurizer`` (an override of the dataset's) brings that network's keys instead.
    """
    from bench.networks import featurizer_space

    space: Space = {}
    for klass in reversed(algorithm_cls.__mro__):
        space.update(klass.__dict__.get("HPARAMS", {}))
    featurizer = featurizer or dataset_cls.FEATURIZER
    space["featurizer"] = Fixed(featurizer, "featurizer network (see bench/networks.py)")
    space.update(featurizer_space(featurizer))
    space.update(getattr(dataset_cls, "HPARAMS", {}))  # the dataset's own keys, e.g. augmentation
    space.update({k: v for k, v in dataset_cls.HPARAM_OVERRIDES.items() if k in space})
    space.update(getattr(dataset_cls, "ALGORITHM_HPARAMS", {}).get(getattr(algorithm_cls, "NAME", None), {}))  # per-algorithm, declared by the dataset
    for klass in reversed(algorithm_cls.__mro__):
        space.update(klass.__dict__.get("DATASET_HPARAMS", {}).get(dataset_cls.NAME, {}))
    return space
