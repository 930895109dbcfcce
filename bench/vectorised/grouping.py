"""Which runs of a sweep train together: group keys, units of work and their description."""

from __future__ import annotations

import math
from typing import Sequence

from bench.seeding import canonical_json
from bench.spec import RunSpec
from bench.vectorised.algorithms import BATCHED

PER_RUN_HPARAMS = frozenset({"lr", "weight_decay"})  # and each batched algorithm's PER_RUN
MAX_GROUP = 16  # members per unit: enough to share a step's operator calls, few enough to spread


def group_key(spec: RunSpec) -> str | None:
    """Specs with equal keys can train as one group; None when the spec trains one by one.

    Needs a batched algorithm (``BATCHED``) on a dropout-free MLP with a linear head
    (cross-entropy, or binary cross-entropy on one logit) and no l2 term, in fp32, without
    weight averaging or unlabeled data.
    """
    hp = spec.hparams
    if (
        spec.algorithm not in BATCHED
        or hp.get("featurizer") != "mlp"
        or hp.get("mlp_dropout", 0.0) != 0.0
        or hp.get("nonlinear_classifier", False)
        or hp.get("l2", 0.0) != 0.0
        or spec.precision != "fp32"
        or spec.averaging
        or spec.uda_fraction
    ):
        return None
    shared = spec.to_dict()
    for key in ("trial_seed", "hparams_seed", "overrides"):
        shared.pop(key, None)
    per_run = PER_RUN_HPARAMS | BATCHED[spec.algorithm].PER_RUN
    shared["hparams"] = {k: v for k, v in hp.items() if k not in per_run}
    return canonical_json(shared)


def units(specs: Sequence[RunSpec], workers: int = 1) -> list[list[RunSpec]]:
    """The specs as units of work: groups of equal ``group_key`` and single runs.

    A group is cut into parts of at most ``MAX_GROUP`` runs, and into at least its share of
    ``workers`` so that every worker gets a unit.
    """
    groups: dict[str, list[RunSpec]] = {}
    out: list[list[RunSpec]] = []
    for spec in specs:
        key = group_key(spec)
        if key is None:
            out.append([spec])
        else:
            groups.setdefault(key, []).append(spec)
    for group in groups.values():
        share = math.ceil(workers * len(group) / max(1, len(specs)))
        parts = min(len(group), max(math.ceil(len(group) / MAX_GROUP), share))
        size = math.ceil(len(group) / parts)
        out += [group[i : i + size] for i in range(0, len(group), size)]
    return out


def describe_units(work: Sequence[Sequence[RunSpec]]) -> list[str]:
    """What ``--dry-run --vectorise`` prints: the groups that train together, and the rest."""
    groups = [unit for unit in work if len(unit) > 1]
    alone = sum(len(unit) == 1 for unit in work)
    lines = [
        f"vectorised: {sum(map(len, groups))} run(s) in {len(groups)} group(s); "
        f"{alone} run(s) one by one"
    ]
    for unit in groups:
        first = unit[0]
        trials = sorted({s.trial_seed for s in unit})
        seeds = sorted({s.hparams_seed for s in unit})
        lines.append(
            f"  {len(unit)} runs of {first.algorithm} on {first.dataset} (test "
            f"{','.join(first.test_envs)}): trials {trials}, hparams seeds {seeds}"
        )
    return lines
