"""The episodic protocol: N-way K-shot episodes drawn from class-disjoint splits.

A few-shot dataset is a ``ClassPool``: examples grouped by class, and the classes split
into ``train`` / ``val`` / ``test`` with no class in two splits (meta-train, meta-validation,
meta-test). An episode picks ``way`` classes of one split, relabels them 0..way-1 in the
order drawn, and takes ``shot`` support and ``query`` query examples of each, all disjoint.
The draw is a pure function of (dataset, data seed, split, episode index, way, shot, query)
through a named stream (bench/seeding.py), so a resumed run redraws exactly the episodes an
uninterrupted one drew, and every method of a trial sees the same meta-test episodes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor

from bench.errors import UserError
from bench.seeding import rng

SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class Episode:
    """One few-shot task; labels are episode labels in ``range(way)``."""

    support_x: Tensor
    support_y: Tensor
    query_x: Tensor
    query_y: Tensor
    classes: tuple[int, ...]  # the pool's class ids behind episode labels 0..way-1

    @property
    def way(self) -> int:
        return len(self.classes)


class ClassPool:
    """Examples grouped by class with disjoint class splits; ``inputs`` turns stored rows into
    network inputs (e.g. uint8 images -> normalised float)."""

    def __init__(
        self,
        x: Tensor,
        labels: Tensor,
        splits: dict[str, list[int]],
        inputs: Callable[[Tensor], Tensor] | None = None,
        names: dict[int, str] | None = None,
    ) -> None:
        if len(x) != len(labels):
            raise ValueError(f"x has {len(x)} rows but labels has {len(labels)}")
        if set(splits) != set(SPLITS):
            raise ValueError(f"splits must be {SPLITS}, got {sorted(splits)}")
        seen: dict[int, str] = {}
        for split, classes in splits.items():
            for c in classes:
                if c in seen:
                    raise ValueError(f"class {c} is in both {seen[c]} and {split}")
                seen[c] = split
        self.x, self.labels, self.splits = x, labels, {s: sorted(splits[s]) for s in SPLITS}
        self.inputs = inputs or (lambda rows: rows)
        self.names = names or {}
        self.members = {c: torch.nonzero(labels == c).flatten() for c in seen}

    def classes(self, split: str) -> list[int]:
        return self.splits[split]

    def smallest_class(self, split: str) -> int:
        return min(len(self.members[c]) for c in self.splits[split])

    def check_episode_shape(self, way: int, shot: int, query: int) -> None:
        """UserError when a split has too few classes or a class too few examples."""
        if way < 2 or shot < 1 or query < 1:
            raise UserError(f"need way >= 2, shot >= 1, query >= 1; got {way}, {shot}, {query}")
        for split in SPLITS:
            if len(self.splits[split]) < way:
                raise UserError(
                    f"{way}-way episodes need {way} classes; the {split} split has "
                    f"{len(self.splits[split])}"
                )
            if self.smallest_class(split) < shot + query:
                raise UserError(
                    f"{shot}-shot episodes with {query} queries need {shot + query} examples per "
                    f"class; a {split} class has {self.smallest_class(split)}"
                )

    def rows(self, idx: Tensor) -> Tensor:
        return self.inputs(self.x[idx])


def sample_episode(
    pool: ClassPool,
    stream: tuple,
    split: str,
    index: int | tuple[int, int],
    way: int,
    shot: int,
    query: int,
) -> Episode:
    """Episode ``index`` of ``split``: a pure function of its arguments (``stream`` names the
    dataset and data seed; a meta-training step indexes its episodes ``(step, j)``)."""
    gen = rng("episode", *stream, split, index, way, shot, query)
    available = pool.classes(split)
    chosen = [available[i] for i in gen.choice(len(available), size=way, replace=False)]
    support, query_rows, s_y, q_y = [], [], [], []
    for label, c in enumerate(chosen):
        members = pool.members[c]
        picked = members[torch.from_numpy(gen.choice(len(members), shot + query, replace=False))]
        support.append(picked[:shot])
        query_rows.append(picked[shot:])
        s_y += [label] * shot
        q_y += [label] * query
    return Episode(
        pool.rows(torch.cat(support)),
        torch.tensor(s_y),
        pool.rows(torch.cat(query_rows)),
        torch.tensor(q_y),
        tuple(int(c) for c in chosen),
    )


def sample_batch(pool: ClassPool, stream: tuple, step: int, size: int) -> tuple[Tensor, Tensor]:
    """A class-labelled minibatch of the meta-train classes (labels ``0..len(train)-1``) for the
    pretraining baselines; a pure function of (stream, step, size)."""
    gen = rng("pretrain_batch", *stream, step, size)
    train = pool.classes("train")
    eligible = torch.cat([pool.members[c] for c in train])
    idx = eligible[torch.from_numpy(gen.choice(len(eligible), size, replace=False))]
    relabel = {c: i for i, c in enumerate(train)}
    return pool.rows(idx), torch.tensor([relabel[int(c)] for c in pool.labels[idx]])
