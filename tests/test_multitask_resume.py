"""An interrupted multi-task run resumes from its last checkpoint, bit for bit."""

from __future__ import annotations

import pytest

from bench import records
from bench.multitask import runner
from bench.multitask.spec import make_mtl_spec


class Interrupted(Exception):
    """Stands for a kill right after a checkpoint."""


def without_wall(found):
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in found]


@pytest.mark.parametrize(
    "method, tasks, overrides, kept",
    [
        # pcgrad draws the order of its projections from torch's RNG: 8 tasks, shared trunk
        ("pcgrad", "linear_related", {"depth": 1, "width": 8}, 2),
        # pretrain_finetune (pretrains steps 0-3): stopped before, then after its phase change
        ("pretrain_finetune", "teacher_mixed", {}, 2),
        ("pretrain_finetune", "teacher_mixed", {}, 3),
        ("uncertainty_weighting", "teacher_nested", {}, 4),
    ],
)
def test_a_run_killed_after_k_records_resumes_to_the_same_records(
    method, tasks, overrides, kept, tmp_path, monkeypatch, one_thread
):
    spec = make_mtl_spec(method, tasks, 1, 0, overrides, steps=8, eval_every=2, size="tiny")
    whole = runner.run(spec, tmp_path / "whole")
    expected = records.check_run(whole.run_dir, spec.to_dict())[1]

    write = runner.write_checkpoint
    written = []

    def killed_after_k(directory, method, step, wall):
        write(directory, method, step, wall)
        written.append(step)
        if len(written) == kept:
            raise Interrupted

    monkeypatch.setattr(runner, "write_checkpoint", killed_after_k)
    with pytest.raises(Interrupted):
        runner.run(spec, tmp_path / "cut", command="first")
    monkeypatch.setattr(runner, "write_checkpoint", write)
    cut = records.run_dir(tmp_path / "cut", spec.run_id)
    assert records.check_run(cut, spec.to_dict())[0] == "partial"
    resumed = runner.run(spec, tmp_path / "cut", command="second")
    assert resumed.status == "ok"
    status, found = records.check_run(cut, spec.to_dict())
    assert status == "ok" and len(found) == len(spec.record_steps) == 5
    assert without_wall(found) == without_wall(expected)
    assert records.read_spec(cut)["command"] == "first"  # the spec.json of the first start


def test_a_checkpoint_without_its_record_restarts_from_scratch(tmp_path, one_thread):
    spec = make_mtl_spec("hard_sharing", "teacher_nested", steps=4, eval_every=2, size="tiny")
    first = runner.run(spec, tmp_path)
    expected = records.read_records(first.run_dir / records.RESULTS)
    (first.run_dir / records.DONE).unlink()
    records.truncate_records(first.run_dir / records.RESULTS, 0)  # checkpoint: step 3
    again = runner.run(spec, tmp_path)
    found = records.check_run(again.run_dir, spec.to_dict())[1]
    assert again.status == "ok" and without_wall(found) == without_wall(expected)
