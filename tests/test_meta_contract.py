"""Every registered meta-learning method and few-shot dataset, picked up from the registries."""

from __future__ import annotations

import io
import pkgutil

import pytest
import torch

import bench.meta.methods
from bench.hparams import Setting
from bench.meta.base import METHODS
from bench.meta.episodes import SPLITS, sample_episode
from bench.meta.few_shot import FEW_SHOT_DATASETS, FewShotDataset
from bench.meta.runner import build_method, draw_for, load_pool
from bench.meta.spec import make_meta_spec, method_space


def _method_cases() -> list[tuple[str, dict]]:
    """Each method at its defaults, and once per other option of each of its Settings (e.g.
    MAML's first_order, the baselines' full fine-tuning): settings change the code path."""
    cases = []
    for name in METHODS.names():
        cases.append((name, {}))
        for key, param in method_space(name, "subspace").items():
            if isinstance(param, Setting) and key in METHODS.get(name).HPARAMS:
                cases += [(name, {key: o}) for o in param.options if o != param.default]
    return cases


@pytest.mark.parametrize("name, overrides", _method_cases())
def test_method_contract(name, overrides, one_thread):
    """Meta-trains a step, adapts without touching its own weights, returns (queries, way)
    logits, and its checkpoint state loads with weights_only and restores it exactly."""
    spec = make_meta_spec(
        name, "subspace", 3, 2, 2, overrides=overrides, steps=2, eval_every=1, size="tiny"
    )
    pool = load_pool("subspace", None, 0, "tiny")
    method = build_method(spec, pool)
    if method.META_TRAINS:
        torch.manual_seed(0)
        losses = method.meta_update(draw_for(pool, spec, 0))
        assert losses and all(isinstance(v, float) for v in losses.values())
        assert int(method.step) == 1
    before = {k: v.clone() for k, v in method.state_dict().items()}
    episode = sample_episode(pool, spec.stream, "val", 0, 3, 2, 2)
    logits = method.adapt_predict(episode.support_x, episode.support_y, episode.query_x)
    assert logits.shape == (6, 3) and torch.isfinite(logits).all()
    assert all(torch.equal(before[k], v) for k, v in method.state_dict().items())
    buffer = io.BytesIO()
    torch.save(method.checkpoint_state(), buffer)
    buffer.seek(0)
    fresh = build_method(make_meta_spec(name, "subspace", 3, 2, 2, trial_seed=1, size="tiny"), pool)
    fresh.load_checkpoint_state(torch.load(buffer, weights_only=True))
    assert all(torch.equal(before[k], v) for k, v in fresh.state_dict().items())


def _reads_files(cls) -> bool:
    return cls.data_paths.__func__ is not FewShotDataset.data_paths.__func__


def _dataset_case(name: str):
    """Datasets that read files need ../shared/data: marked slow."""
    reads = _reads_files(FEW_SHOT_DATASETS.get(name))
    return pytest.param(name, marks=pytest.mark.slow) if reads else name


@pytest.mark.parametrize("name", [_dataset_case(n) for n in FEW_SHOT_DATASETS.names()])
def test_few_shot_dataset_contract(name, request):
    """Disjoint splits that hold a 5-way 1-shot episode with 5 queries, inputs of the declared
    shape, and the same pool for the same data seed."""
    cls = FEW_SHOT_DATASETS.get(name)
    root = (
        request.getfixturevalue("data_dir")
        if cls.data_paths.__qualname__ != ("FewShotDataset.data_paths")
        else None
    )
    size = "full" if name.startswith("pacs") else "tiny"  # tiny PACS has 4 images per class
    pool = cls.pool(root, 0, size)
    classes = [set(pool.classes(s)) for s in SPLITS]
    assert sum(len(c) for c in classes) == len(set().union(*classes))
    pool.check_episode_shape(5, 1, 5)
    episode = sample_episode(pool, (name, 0), "test", 0, 5, 1, 5)
    assert tuple(episode.query_x.shape[1:]) == cls.INPUT_SHAPE
    assert episode.query_x.dtype == torch.float32
    if name == "subspace":
        assert torch.equal(cls.pool(root, 0, size).x, pool.x)


def test_every_method_module_registers_a_method():
    registered = {METHODS.get(name).__module__ for name in METHODS.names()}
    for module in pkgutil.iter_modules(bench.meta.methods.__path__):
        assert f"bench.meta.methods.{module.name}" in registered, f"{module.name} registers nothing"
