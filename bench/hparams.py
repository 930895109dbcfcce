"""Hyperparameter spaces: each key has a default, a random-search distribution and a doc.

``hparams_seed == 0`` gives the defaults. Otherwise every key is drawn from its own
stream keyed on (algorithm, dataset, hparams_seed, trial_seed, key), so adding a key
never changes the values drawn for the others (DomainBed's convention, per key).
The key types (``Param``, ``Fixed``, ``LogUniform``, ...) are declared in ``bench.params``
and re-exported here, where algorithms and datasets import them from.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, Mapping

from bench.errors import UserError
from bench.params import (
    AT_LEAST_ONE,
    DROPOUT,
    NON_NEGATIVE,
    POSITIVE,
    Choice,
    Domain,
    Fixed,
    IntLogUniform,
    IntUniform,
    LogUniform,
    Param,
    Setting,
    Space,
    Uniform,
)
from bench.seeding import rng

__all__ = [
    "AT_LEAST_ONE",
    "DROPOUT",
    "NON_NEGATIVE",
    "POSITIVE",
    "Choice",
    "Domain",
    "Fixed",
    "IntLogUniform",
    "IntUniform",
    "LogUniform",
    "Param",
    "Setting",
    "Space",
    "Uniform",
    "apply_overrides",
    "sample",
    "space_for",
]


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
    # lazy: the CLI imports this module at start-up, and bench.networks imports torch
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
