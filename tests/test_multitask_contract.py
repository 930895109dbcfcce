"""Every registered task set and multi-task method, tested from the registries (no hand list)."""

from __future__ import annotations

import pytest
import torch

from bench import records
from bench.errors import UserError
from bench.multitask.method import METHODS
from bench.multitask.runner import run
from bench.multitask.spec import make_mtl_spec
from bench.multitask.tasks import SPLITS, TASK_SETS, TaskSet


def _reads_files(name: str) -> bool:
    return TASK_SETS.get(name).data_paths.__func__ is not TaskSet.data_paths.__func__


def _task_sets() -> list:
    """Generated sets run in the fast subset; those reading real data are marked slow."""
    return [
        pytest.param(n, marks=pytest.mark.slow) if _reads_files(n) else n for n in TASK_SETS.names()
    ]


def _root(name: str, request) -> str | None:
    return request.getfixturevalue("data_dir") if _reads_files(name) else None


@pytest.mark.parametrize("name", _task_sets())
def test_task_set_contract(name, request, one_thread):
    cls, root = TASK_SETS.get(name), _root(name, request)
    data = cls(root, 0, "tiny").data
    assert cls.main_task() in cls.task_names()
    for task in cls.TASKS:
        for split in SPLITS:
            part = data[task.name][split]
            assert len(part) > 0 and tuple(part.x.shape[1:]) == tuple(cls.INPUT_SHAPE)
            if task.kind == "classification":
                assert part.y.dtype == torch.long
                assert 0 <= int(part.y.min()) and int(part.y.max()) < max(task.n_outputs, 2)
            else:
                assert part.y.dtype == torch.float32 and part.y.shape == (len(part),)
    again, other = cls(root, 0, "tiny").data, cls(root, 1, "tiny").data
    first = cls.TASKS[0].name
    assert torch.equal(again[first]["train"].x, data[first]["train"].x)
    assert not torch.equal(other[first]["train"].x, data[first]["train"].x)


@pytest.mark.parametrize("tasks", _task_sets())
@pytest.mark.parametrize("method", METHODS.names())
def test_method_runs_whole_and_repeats(method, tasks, request, tmp_path, one_thread):
    root = _root(tasks, request)
    if METHODS.get(method).incompatible(TASK_SETS.get(tasks).TASKS):
        pytest.skip(f"{method} does not apply to {tasks}")
    spec = make_mtl_spec(method, tasks, steps=3, eval_every=2, size="tiny", data_dir=root)
    first = run(spec, tmp_path / "a", root)
    second = run(spec, tmp_path / "b", root)
    status, found = records.check_run(first.run_dir, spec.to_dict())
    assert status == "ok" and [r["step"] for r in found] == [0, 2]
    assert set(found[-1]["eval"]) == set(TASK_SETS.get(tasks).task_names())
    assert found[-1]["eval"] == second.last_record["eval"]  # same seed, same numbers
    assert run(spec, tmp_path / "a", root).status == "skipped"


def test_everything_that_changes_results_changes_the_run_id():
    base = make_mtl_spec("hard_sharing", "teacher_nested")
    changed = [
        make_mtl_spec("hard_sharing", "teacher_nested", overrides={"lr": 0.01}),
        make_mtl_spec("hard_sharing", "teacher_nested", trial_seed=1),
        make_mtl_spec("hard_sharing", "teacher_nested", hparams_seed=1),
        make_mtl_spec("hard_sharing", "teacher_nested", steps=10),
        make_mtl_spec("pcgrad", "teacher_nested"),
        make_mtl_spec("hard_sharing", "teacher_mixed"),
    ]
    assert len({base.run_id, *(c.run_id for c in changed)}) == 1 + len(changed)
    assert base.run_id == make_mtl_spec("hard_sharing", "teacher_nested").run_id
    assert base.hparams["depth"] == 1  # the task set's override is resolved into the spec


@pytest.mark.parametrize(
    "tasks, overrides",
    [
        ("teacher_nested", {"lr": -1.0}),
        ("linear_related", {"lr": -1.0}),  # a task set's Fixed lr keeps the method's domain
        ("teacher_nested", {"no_such": 1}),
        ("teacher_nested", {"depth": "two"}),
        ("teacher_nested", {"rescale": 0.0}),
    ],
)
def test_bad_overrides_are_user_errors(tasks, overrides):
    with pytest.raises(UserError):
        make_mtl_spec("pretrain_finetune", tasks, overrides=overrides)


def test_a_diverged_run_is_whole_and_says_so(tmp_path, one_thread):
    spec = make_mtl_spec(
        "hard_sharing", "teacher_nested", steps=50, eval_every=10, overrides={"lr": 1e30}
    )
    outcome = run(spec, tmp_path)
    status, found = records.check_run(outcome.run_dir, spec.to_dict())
    assert outcome.status == status == "diverged"
    assert [r["step"] for r in found] == spec.record_steps[: len(found)]
