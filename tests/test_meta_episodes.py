"""The episodic protocol: reproducible episodes, class-disjoint splits, disjoint support/query."""

from __future__ import annotations

import pytest
import torch

from bench.meta.episodes import SPLITS, sample_batch, sample_episode
from bench.meta.few_shot import FEW_SHOT_DATASETS

STREAM = ("subspace", 0)


@pytest.fixture(scope="module")
def pool():
    return FEW_SHOT_DATASETS.get("subspace").pool(None, 0, "tiny")


def test_an_episode_is_a_pure_function_of_its_seed_split_and_index(pool):
    a = sample_episode(pool, STREAM, "test", 3, 5, 2, 4)
    b = sample_episode(pool, STREAM, "test", 3, 5, 2, 4)
    other = sample_episode(pool, STREAM, "test", 4, 5, 2, 4)
    for field in ("support_x", "support_y", "query_x", "query_y"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert a.classes == b.classes
    assert not torch.equal(a.query_x, other.query_x)
    reseeded = sample_episode(pool, ("subspace", 1), "test", 3, 5, 2, 4)
    assert not torch.equal(a.query_x, reseeded.query_x)


def test_episodes_of_each_split_use_only_that_splits_classes(pool):
    seen = {split: set() for split in SPLITS}
    for split in SPLITS:
        others = {c for s in SPLITS if s != split for c in pool.classes(s)}
        assert set(pool.classes(split)).isdisjoint(others)
        for i in range(40):
            seen[split] |= set(sample_episode(pool, STREAM, split, i, 5, 1, 3).classes)
        assert seen[split] <= set(pool.classes(split))
    assert seen["train"].isdisjoint(seen["val"] | seen["test"])
    assert seen["val"].isdisjoint(seen["test"])


def test_episode_labels_follow_the_classes_drawn_and_support_is_not_in_query(pool):
    episode = sample_episode(pool, STREAM, "train", (7, 1), 5, 3, 4)
    assert episode.support_y.tolist() == [k for k in range(5) for _ in range(3)]
    assert episode.query_y.tolist() == [k for k in range(5) for _ in range(4)]
    for k, c in enumerate(episode.classes):
        members = pool.x[pool.members[c]]
        for row in torch.cat(
            [episode.support_x[episode.support_y == k], episode.query_x[episode.query_y == k]]
        ):
            assert (members == row).all(1).any()
    both = torch.cat([episode.support_x, episode.query_x])
    assert len(torch.unique(both, dim=0)) == len(both)


def test_pretraining_batches_come_from_meta_train_classes_only(pool):
    x, y = sample_batch(pool, STREAM, 0, 64)
    x2, y2 = sample_batch(pool, STREAM, 0, 64)
    assert torch.equal(x, x2) and torch.equal(y, y2)
    train_rows = pool.x[torch.cat([pool.members[c] for c in pool.classes("train")])]
    assert all((train_rows == row).all(1).any() for row in x)
    assert int(y.max()) < len(pool.classes("train"))


@pytest.mark.slow
def test_mnist_splits_are_disjoint_by_digit(data_dir):
    mnist = FEW_SHOT_DATASETS.get("mnist").pool(data_dir, 0, "tiny")
    digits = {s: {mnist.names[c].split("@")[0] for c in mnist.classes(s)} for s in SPLITS}
    assert digits == {"train": set("01234"), "val": set("56"), "test": set("789")}
    assert tuple(mnist.rows(mnist.members[0][:2]).shape) == (2, 1, 28, 28)


@pytest.mark.slow
def test_cross_domain_pacs_meta_tests_on_an_unseen_domain(data_dir):
    pacs = FEW_SHOT_DATASETS.get("pacs_cross").pool(data_dir, 0, "full")
    domains = {s: {pacs.names[c].split("@")[1] for c in pacs.classes(s)} for s in SPLITS}
    assert domains == {"train": {"art_painting", "cartoon"}, "val": {"photo"}, "test": {"sketch"}}
    pacs.check_episode_shape(5, 5, 15)
