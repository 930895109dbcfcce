"""Public contract checks for plugin authors: ``check_algorithm(cls)`` and ``check_dataset(cls)``.

Each raises AssertionError with a message saying which part of the contract broke.
Run them in your own tests, e.g. ``check_algorithm(MyAlgorithm)``.
"""

from __future__ import annotations

import io
import math
from typing import Any

import torch

from bench.datasets import DATASETS
from bench.hparams import sample, space_for
from bench.networks import featurizer_space


def _hparams(alg_cls: type, ds_cls: type, hparams_seed: int = 0) -> dict[str, Any]:
    name = getattr(alg_cls, "NAME", alg_cls.__name__.lower())
    return sample(space_for(alg_cls, ds_cls), name, ds_cls.NAME, hparams_seed, 0)


def _minibatches(dataset, names: list[str], batch: int, step: int) -> list:
    out = []
    for name in names:
        env = dataset.envs[name]
        gen = torch.Generator().manual_seed(step)
        out.append(env.batch(torch.randint(len(env), (batch,), generator=gen), train=True))
    return out


def _train(alg_cls: type, dataset, hparams: dict[str, Any], steps: int, seed: int = 0):
    torch.manual_seed(seed)
    names = dataset.env_names()[:-1]
    algorithm = alg_cls(dataset.INPUT_SHAPE, dataset.num_outputs(), len(names), hparams)
    losses = []
    batch = min(hparams.get("batch_size") or 32, 32)
    for step in range(steps):
        stats = algorithm.update(_minibatches(dataset, names, batch, step))
        assert isinstance(stats, dict) and stats, (
            f"{alg_cls.__name__}.update must return a non-empty dict of floats"
        )
        for key, value in stats.items():
            assert isinstance(value, float) and math.isfinite(value), (
                f"{alg_cls.__name__}: update()[{key!r}] = {value!r} is not a finite float"
            )
        losses.append(stats)
    return algorithm, losses


class RecordingHparams(dict):
    """An hparams dict that records which keys are read (``[]``, ``get``, ``in``).

    ``Algorithm.__init__`` copies its hparams with ``copy.copy``, which keeps this type and
    shares ``read``, so reads through ``self.hparams`` are recorded too.
    """

    def __init__(self, values: dict[str, Any]) -> None:
        super().__init__(values)
        self.read: set[str] = set()

    def __getitem__(self, key: str) -> Any:
        self.read.add(key)
        return super().__getitem__(key)

    def get(self, key: str, default: Any = None) -> Any:
        self.read.add(key)
        return super().get(key, default)

    def __contains__(self, key: object) -> bool:
        self.read.add(str(key))
        return super().__contains__(key)

    def __copy__(self) -> "RecordingHparams":
        twin = RecordingHparams(self)
        twin.read = self.read
        return twin


def declared_hparams(alg_cls: type) -> set[str]:
    """Keys the algorithm (or a base class) declares in ``HPARAMS``."""
    return {key for klass in alg_cls.__mro__ for key in vars(klass).get("HPARAMS", {})}


def _check_every_declared_hparam_is_read(
    alg_cls: type, data, hparams: dict[str, Any], steps: int
) -> None:
    recording = RecordingHparams(hparams)
    _train(alg_cls, data, recording, steps)
    exempt = getattr(alg_cls, "RUN_HPARAMS", frozenset())  # read by the runner or prepare_run
    unread = sorted(declared_hparams(alg_cls) - recording.read - set(exempt))
    assert not unread, (
        f"{alg_cls.__name__} declares hparams it never reads in __init__ or {steps} updates: "
        f"{', '.join(unread)} (a search over them would be wasted; remove them or use them)"
    )


def _param_norm(algorithm) -> float:
    return float(sum(p.detach().pow(2).sum() for p in algorithm.parameters()))


def _check_l2_is_applied(alg_cls: type, data, hparams: dict[str, Any], steps: int) -> None:
    """A large ``l2`` must shrink the weights: an update that drops the l2 term fails here."""
    free, _ = _train(alg_cls, data, {**hparams, "l2": 0.0}, steps)
    decayed, _ = _train(alg_cls, data, {**hparams, "l2": 0.1}, steps)
    assert _param_norm(decayed) < _param_norm(free), (
        f"{alg_cls.__name__} ignores the l2 hparam: weights trained with l2 = 0.1 are not smaller "
        "than with l2 = 0; let Algorithm.minimize/apply_gradients add it, or use l2_penalty()"
    )


def _logits(algorithm, x: torch.Tensor) -> torch.Tensor:
    algorithm.eval()
    with torch.no_grad():
        return algorithm.predict(x)


def check_algorithm(alg_cls: type, dataset: str = "debug", steps: int = 5) -> None:
    """Construct on ``dataset`` (tiny), train a few steps; check logits, step count, determinism
    (same seed: same logits; another seed: different ones), the state round trip and resume,
    that every declared hparam is read and that ``l2`` is applied."""
    ds_cls = DATASETS.get(dataset)
    data = ds_cls(None, data_seed=0, size="tiny")
    space = space_for(alg_cls, ds_cls)
    for key, param in space.items():
        param.validate(key, param.default)  # defaults lie in their own domain
    hparams = _hparams(alg_cls, ds_cls)
    assert int(getattr(alg_cls, "VERSION", -1)) >= 1, f"{alg_cls.__name__} needs VERSION >= 1"

    algorithm, _ = _train(alg_cls, data, hparams, steps)
    x, _ = data.envs[data.env_names()[-1]].batch(torch.arange(8))
    logits = _logits(algorithm, x)
    assert logits.shape == (8, ds_cls.num_outputs()), (
        f"predict() gave shape {tuple(logits.shape)}, expected (8, {ds_cls.num_outputs()})"
    )
    assert torch.isfinite(logits).all(), "predict() gave non-finite logits"
    assert int(algorithm.step) == steps, f"self.step is {int(algorithm.step)} after {steps} updates"

    again, _ = _train(alg_cls, data, hparams, steps)
    assert torch.equal(_logits(again, x), logits), (
        "same seed, same data, different logits: the algorithm is not deterministic"
    )
    other, _ = _train(alg_cls, data, hparams, steps, seed=1)
    assert not torch.equal(_logits(other, x), logits), "another seed gave the same logits"

    buffer = io.BytesIO()
    torch.save(algorithm.state_dict(), buffer)
    buffer.seek(0)
    torch.manual_seed(123)
    fresh = alg_cls(data.INPUT_SHAPE, data.num_outputs(), len(data.env_names()) - 1, hparams)
    fresh.load_state_dict(torch.load(buffer, weights_only=True))  # as the runner loads checkpoints
    fresh.eval()
    with torch.no_grad():
        assert torch.equal(fresh.predict(x), logits), "state_dict round trip changed the logits"

    # Resuming from the state dict must continue exactly as the uninterrupted run.
    names = data.env_names()[:-1]
    batch = min(hparams.get("batch_size") or 32, 32)
    torch.manual_seed(7)
    algorithm.train()
    algorithm.update(_minibatches(data, names, batch, steps))
    torch.manual_seed(7)
    fresh.train()
    fresh.update(_minibatches(data, names, batch, steps))
    algorithm.eval()
    fresh.eval()
    with torch.no_grad():
        assert torch.allclose(fresh.predict(x), algorithm.predict(x), atol=1e-6), (
            "an update after a state_dict round trip differs: optimiser or other state "
            "is not checkpointed"
        )
    _check_every_declared_hparam_is_read(alg_cls, data, hparams, steps)
    _check_l2_is_applied(alg_cls, data, hparams, steps)


def check_dataset(ds_cls: type, size: str = "tiny", root: str | None = None) -> None:
    """Construct twice with one seed (identical), once with another; check declared shapes and
    names."""
    a = ds_cls(root, data_seed=0, size=size)
    b = ds_cls(root, data_seed=0, size=size)
    assert a.env_names() == list(a.envs), "environments built differ from ENVIRONMENTS"
    assert ds_cls.TEST_ENVS is None or set(ds_cls.TEST_ENVS) <= set(a.env_names()), (
        "TEST_ENVS names unknown environments"
    )
    for name in a.env_names():
        xa, ya = a.envs[name].batch(None)
        xb, yb = b.envs[name].batch(None)
        assert torch.equal(xa, xb) and torch.equal(ya, yb), (
            f"{name}: same data_seed built different data"
        )
        assert tuple(xa.shape[1:]) == tuple(ds_cls.INPUT_SHAPE), (
            f"{name}: shape {tuple(xa.shape[1:])} != INPUT_SHAPE {ds_cls.INPUT_SHAPE}"
        )
        assert xa.dtype.is_floating_point, f"{name}: inputs must be floating point"
        assert torch.isfinite(xa).all(), f"{name}: non-finite inputs"
        assert (
            ya.dtype == torch.long and 0 <= int(ya.min()) and int(ya.max()) < ds_cls.NUM_CLASSES
        ), f"{name}: labels outside [0, {ds_cls.NUM_CLASSES})"
    assert ds_cls.N_STEPS >= 1 and ds_cls.EVAL_EVERY >= 1, "N_STEPS and EVAL_EVERY must be >= 1"
    assert ds_cls.FEATURIZER, "FEATURIZER must name a registered featurizer"
    featurizer_space(ds_cls.FEATURIZER)
