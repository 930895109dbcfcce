"""A small multi-task sweep: methods x task sets x trials x hparams samples, run one by one.

``grid`` compares values of one hparam instead of sampling it (e.g. pretrain-finetune's
``rescale``): methods whose space has the key get one run per value, the others one run.
Runs already finished are skipped, so a sweep can be re-run to fill in what is missing.
Runs are sequential on purpose: they are small, and the machines this runs on are shared.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from bench.errors import UserError
from bench.multitask.method import METHODS
from bench.multitask.runner import Outcome, run
from bench.multitask.spec import MTLSpec, make_mtl_spec, space_for
from bench.multitask.tasks import TASK_SETS


def plan(
    methods: Sequence[str],
    task_sets: Sequence[str],
    trials: int = 3,
    hparams_samples: int = 0,
    overrides: Mapping[str, Any] | None = None,
    grid: tuple[str, Sequence[Any]] | None = None,
    skipped: Callable[[str], None] = lambda line: None,
    **spec_options: Any,
) -> list[MTLSpec]:
    """The specs of the sweep; incompatible (method, task set) pairs are reported and left out.

    ``overrides`` apply to the methods whose space has the key (``lambda1`` only to
    evgeniou_pontil); a key no chosen method has is an error.
    """
    if trials < 1 or hparams_samples < 0:
        raise UserError(
            f"need trials >= 1 and hparams samples >= 0, got {trials}, {hparams_samples}"
        )
    key, values = grid if grid else (None, [None])
    if key and not any(
        key in space_for(METHODS.get(m), TASK_SETS.get(t)) for m in methods for t in task_sets
    ):
        raise UserError(f"--grid {key}: no chosen method has that hparam")
    spaces = [space_for(METHODS.get(m), TASK_SETS.get(t)) for m in methods for t in task_sets]
    unknown = sorted(k for k in overrides or {} if not any(k in space for space in spaces))
    if unknown:
        raise UserError(f"unknown hparam(s) {', '.join(unknown)} for every chosen method")
    specs = []
    for tasks in task_sets:
        task_cls = TASK_SETS.get(tasks)
        for method in methods:
            problem = METHODS.get(method).incompatible(task_cls.TASKS)
            if problem:
                skipped(f"skipping {method} on {tasks}: {problem}")
                continue
            space = space_for(METHODS.get(method), task_cls)
            for value in values if key in space else [None]:
                extra = dict(overrides or {}, **({key: value} if value is not None else {}))
                given = {k: v for k, v in extra.items() if k in space}
                for trial in range(trials):
                    for seed in range(hparams_samples + 1):
                        specs.append(
                            make_mtl_spec(method, tasks, trial, seed, given, **spec_options)
                        )
    return specs


def run_sweep(
    specs: Sequence[MTLSpec],
    output_dir: str | Path,
    data_dir: str | None = None,
    command: str = "",
    progress: Callable[[int, MTLSpec, Outcome], None] = lambda i, spec, outcome: None,
) -> list[Outcome]:
    outcomes = []
    for i, spec in enumerate(specs):
        outcomes.append(run(spec, output_dir, data_dir, command))
        progress(i, spec, outcomes[-1])
    return outcomes
