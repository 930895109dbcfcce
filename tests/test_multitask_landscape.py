"""Loss landscapes: filter-normalised directions, and a line that joins the right endpoints."""

from __future__ import annotations

import pytest
import torch

from bench.multitask.landscape import LINE, filter_normalised, landscape
from bench.multitask.runner import load_task_set, train
from bench.multitask.spec import make_mtl_spec


def test_directions_have_the_weights_filter_norms_and_spare_biases():
    weights = [torch.randn(4, 3), torch.randn(2, 3, 5), torch.randn(4)]
    d = filter_normalised(weights, torch.Generator().manual_seed(0))
    assert torch.allclose(d[0].norm(dim=1), weights[0].norm(dim=1))
    assert torch.allclose(d[1].flatten(1).norm(dim=1), weights[1].flatten(1).norm(dim=1))
    assert torch.equal(d[2], torch.zeros(4))
    assert not torch.allclose(d[0], weights[0])


@pytest.mark.parametrize(
    "method, overrides", [("single_task", {}), ("pretrain_finetune", {"rescale": 0.5})]
)
def test_the_line_ends_at_the_trained_run(method, overrides, tmp_path, one_thread):
    """The landscape retrains the run itself: its final weights must be the run's."""
    spec = make_mtl_spec(method, "teacher_nested", steps=20, eval_every=10, overrides=overrides)
    taskset = load_task_set("teacher_nested", None, 0, "full")
    found = landscape(spec, taskset)
    final = train(spec, tmp_path, taskset).last_record["eval"]["main"]["train"]  # mse
    at_one = list(LINE).index(1.0)
    assert found["line"]["train"][at_one] == pytest.approx(final, rel=1e-5)
    assert found["slice"]["train"][10][10] == pytest.approx(final, rel=1e-5)  # the centre
    assert found["line"]["train"][list(LINE).index(0.0)] > final  # training went downhill
