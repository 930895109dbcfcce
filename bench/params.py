"""Typed hyperparameter declarations: a default, a random-search distribution, a doc and a domain.

The bottom layer of hyperparameters: networks, algorithms and datasets declare their keys with
these types; ``bench.hparams`` (which re-exports them) merges, samples and validates spaces.
They live apart from ``bench.hparams`` because merging a space needs the featurizers' keys
(``bench.networks``), and the networks declare those keys with these types.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from bench.errors import UserError


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
