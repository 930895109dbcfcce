"""MTLSpec: everything that changes a multi-task run's numbers, hashed into its run id.

Same scheme as ``bench.spec.RunSpec`` (resolved hparams, space digest, data fingerprint,
plugin code digests, identity scheme), with a task set in place of a dataset and no test
environments. ``kind = "multitask"`` keeps these runs apart from DG runs in one output dir.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, replace
from typing import Any, Mapping

from bench import hparams as hp
from bench.errors import UserError
from bench.fingerprint import code_digests, data_fingerprint
from bench.hparams import Param
from bench.multitask.method import METHODS
from bench.multitask.tasks import TASK_SETS
from bench.records import IDENTITY, record_steps
from bench.seeding import canonical_json
from bench.spec import space_digest

KIND = "multitask"


@dataclass(frozen=True)
class MTLSpec:
    method: str
    tasks: str
    trial_seed: int
    hparams_seed: int
    overrides: Mapping[str, Any]
    steps: int
    eval_every: int
    size: str
    method_version: int
    tasks_version: int
    hparams: Mapping[str, Any]
    space: str
    data: str
    code: Mapping[str, str]
    kind: str = KIND
    identity: int = IDENTITY

    @property
    def data_seed(self) -> int:
        """Data is redrawn per trial and shared by every method in it (paired comparisons)."""
        return self.trial_seed

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for key in ("overrides", "hparams", "code"):
            d[key] = dict(d[key])
        return d

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    @property
    def record_steps(self) -> list[int]:
        return record_steps(self.steps, self.eval_every)


def space_for(method_cls: type, tasks_cls: type) -> dict[str, Param]:
    """The method's HPARAMS along its MRO, then the task set's overrides of keys it has.

    An override without a domain keeps the method's (a Fixed lr stays > 0), as in bench's
    ``hparams.space_for``.
    """
    space: dict[str, Param] = {}
    for klass in reversed(method_cls.__mro__):
        space.update(klass.__dict__.get("HPARAMS", {}))
    for key, param in tasks_cls.HPARAM_OVERRIDES.items():
        if key in space:
            space[key] = param if param.domain else replace(param, domain=space[key].domain)
    return space


def make_mtl_spec(
    method: str,
    tasks: str,
    trial_seed: int = 0,
    hparams_seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
    size: str = "full",
    data_dir: str | None = None,
) -> MTLSpec:
    """A validated, resolved spec; defaults come from the task set. Bad input raises UserError."""
    method_cls, tasks_cls = METHODS.get(method), TASK_SETS.get(tasks)
    if trial_seed < 0 or hparams_seed < 0:
        raise UserError(f"seeds must be >= 0, got trial {trial_seed}, hparams {hparams_seed}")
    if size not in ("full", "tiny"):
        raise UserError(f"size must be 'full' or 'tiny', got {size!r}")
    steps = tasks_cls.N_STEPS if steps is None else steps
    eval_every = tasks_cls.EVAL_EVERY if eval_every is None else eval_every
    if steps < 1 or eval_every < 1:
        raise UserError(f"steps and eval_every must be >= 1, got {steps} and {eval_every}")
    overrides = dict(overrides or {})
    space = space_for(method_cls, tasks_cls)
    values = hp.sample(space, method_cls.NAME, tasks_cls.NAME, hparams_seed, trial_seed)
    return MTLSpec(
        method=method_cls.NAME,
        tasks=tasks_cls.NAME,
        trial_seed=trial_seed,
        hparams_seed=hparams_seed,
        overrides=overrides,
        steps=steps,
        eval_every=eval_every,
        size=size,
        method_version=method_cls.VERSION,
        tasks_version=tasks_cls.VERSION,
        hparams=hp.apply_overrides(space, values, overrides),
        space=space_digest(space),
        data=data_fingerprint(tasks_cls.data_paths(data_dir)),
        code=code_digests(method_cls, tasks_cls),
    )
