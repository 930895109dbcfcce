"""MetaSpec: everything that changes a meta-learning run's numbers, hashed into its run id.

The same idea as bench/spec.py's RunSpec (resolved hparams, search-space digest, data
fingerprint, versions), for the episodic protocol's own settings: way, shot, queries per
class and the numbers of meta-validation and meta-test episodes.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from typing import Any, Mapping

from bench.errors import UserError
from bench.fingerprint import data_fingerprint
from bench.hparams import Fixed, Space, apply_overrides, sample
from bench.meta.base import METHODS
from bench.meta.few_shot import FEW_SHOT_DATASETS
from bench.networks import featurizer_space
from bench.seeding import canonical_json
from bench.spec import space_digest

META_IDENTITY = 1  # bump when the scheme of fields below changes meaning
# Episodes per evaluation by default; 600 meta-test episodes is the field's convention
# (Chen et al. 2019), which boards name next to a reduced budget.
VAL_EPISODES = 100
TEST_EPISODES = 600


@dataclass(frozen=True)
class MetaSpec:
    method: str
    dataset: str
    way: int
    shot: int
    query: int
    trial_seed: int
    hparams_seed: int
    overrides: Mapping[str, Any]
    steps: int
    eval_every: int
    val_episodes: int
    test_episodes: int
    size: str
    method_version: int
    dataset_version: int
    hparams: Mapping[str, Any]
    space: str
    data: str
    identity: int = META_IDENTITY

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["overrides"], d["hparams"] = dict(self.overrides), dict(self.hparams)
        return d

    @property
    def run_id(self) -> str:
        return hashlib.sha256(canonical_json(self.to_dict()).encode()).hexdigest()[:16]

    @property
    def stream(self) -> tuple[str, int]:
        """Names the episode streams: data (and so episodes) are redrawn per trial."""
        return (self.dataset, self.trial_seed)


def method_space(method: str, dataset: str, featurizer: str | None = None) -> Space:
    """The method's keys along its MRO, its featurizer's, then the dataset's overrides."""
    method_cls, dataset_cls = METHODS.get(method), FEW_SHOT_DATASETS.get(dataset)
    space: Space = {}
    for klass in reversed(method_cls.__mro__):
        space.update(klass.__dict__.get("HPARAMS", {}))
    featurizer = featurizer or dataset_cls.FEATURIZER
    space["featurizer"] = Fixed(featurizer, "featurizer network (see bench/networks.py)")
    space.update(featurizer_space(featurizer))
    space.update({k: v for k, v in dataset_cls.HPARAM_OVERRIDES.items() if k in space})
    return space


def make_meta_spec(
    method: str,
    dataset: str,
    way: int = 5,
    shot: int = 1,
    query: int = 15,
    trial_seed: int = 0,
    hparams_seed: int = 0,
    overrides: Mapping[str, Any] | None = None,
    steps: int | None = None,
    eval_every: int | None = None,
    val_episodes: int = VAL_EPISODES,
    test_episodes: int = TEST_EPISODES,
    size: str = "full",
    data_dir: str | None = None,
) -> MetaSpec:
    """A validated MetaSpec; UserError on bad input. A method that does not meta-train (scratch)
    gets one step: there is nothing to train before the episodes."""
    method_cls, dataset_cls = METHODS.get(method), FEW_SHOT_DATASETS.get(dataset)
    method, dataset = METHODS.canonical(method), FEW_SHOT_DATASETS.canonical(dataset)
    if min(trial_seed, hparams_seed) < 0:
        raise UserError(f"seeds must be >= 0, got {trial_seed} and {hparams_seed}")
    if size not in ("full", "tiny"):
        raise UserError(f"size must be 'full' or 'tiny', got {size!r}")
    if way < 2 or shot < 1 or query < 1:
        raise UserError(f"need way >= 2, shot >= 1, query >= 1; got {way}, {shot}, {query}")
    steps = dataset_cls.N_STEPS if steps is None else steps
    eval_every = dataset_cls.EVAL_EVERY if eval_every is None else eval_every
    if not method_cls.META_TRAINS:
        steps = eval_every = 1
    if min(steps, eval_every, val_episodes, test_episodes) < 1:
        raise UserError("steps, eval_every, val_episodes and test_episodes must be >= 1")
    overrides = dict(overrides or {})
    space = method_space(method, dataset, overrides.get("featurizer"))
    hparams = apply_overrides(
        space, sample(space, method, dataset, hparams_seed, trial_seed), overrides
    )
    return MetaSpec(
        method=method,
        dataset=dataset,
        way=way,
        shot=shot,
        query=query,
        trial_seed=trial_seed,
        hparams_seed=hparams_seed,
        overrides=overrides,
        steps=steps,
        eval_every=eval_every,
        val_episodes=val_episodes,
        test_episodes=test_episodes,
        size=size,
        method_version=method_cls.VERSION,
        dataset_version=dataset_cls.VERSION,
        hparams=hparams,
        space=space_digest(space),
        data=data_fingerprint(dataset_cls.data_paths(data_dir)),
    )
