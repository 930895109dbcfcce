"""GUE transcription-factor binding as a multi-task set: five human TF tasks, one CNN trunk.

GUE (Zhou et al. 2024, DNABERT-2) ships each TF-binding task as its own file of 101 bp
sequences with official train/dev/test splits (``../shared/data/genomic``, see
``bench/datasets/genomic.py``, which reads them). Here each human TF task is a binary
classification task on its own sequences (separate inputs): train is a random subset of
GUE's train split (2000 sequences per task, so pooling can matter; 200 with size tiny),
val is GUE's dev split and test GUE's test split (200 of each with size tiny). Whether
binding sites of different factors share enough sequence features for a shared trunk to
help is the question. Sequences are one-hot (A, C, G, T; N = zeros), 4 x 101.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from bench.datasets.files import find_data
from bench.datasets.genomic import GUE_SPLITS, HOW_TO_GET, encode, read_sequence_file
from bench.errors import UserError
from bench.hparams import Fixed
from bench.multitask.tasks import Split, Task, TaskData, TaskSet, register_task_set
from bench.seeding import rng

FACTORS = tuple(f"human_tf_{k}" for k in range(5))
LENGTH = 101


def one_hot(codes: torch.Tensor) -> torch.Tensor:
    """uint8 base codes (n, L) -> float (n, 4, L); N (code 4) is all zeros."""
    return torch.nn.functional.one_hot(codes.long(), 5)[..., :4].transpose(1, 2).float()


@register_task_set("gue_tf_multitask")
class GUETFMultitask(TaskSet):
    VERSION = 1
    TASKS = tuple(Task(f, "classification") for f in FACTORS)
    INPUT_SHAPE = (4, LENGTH)
    SIZES = {"full": (2000, None, None), "tiny": (200, 200, 200)}  # train, val, test; None = all
    N_STEPS = 2000
    EVAL_EVERY = 250
    HPARAM_OVERRIDES = {"trunk": Fixed("seq_cnn", "bench's sequence CNN (networks.SeqCNN)")}
    REFERENCE = "GUE (Zhou et al. 2024, DNABERT-2) human TF-binding tasks, official splits"

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        return [
            find_data(root, [f"genomic/gue_{f}.csv.gz"], f"GUE file gue_{f}.csv.gz", HOW_TO_GET)
            for f in FACTORS
        ]

    def build(self) -> dict[str, TaskData]:
        out = {}
        for factor, path in zip(FACTORS, self.data_paths(self.root)):
            columns = read_sequence_file(path)
            sizes = tuple(int((columns["split"] == s).sum()) for s in ("train", "dev", "test"))
            if sizes != GUE_SPLITS[factor]:
                raise UserError(
                    f"{path}: split sizes {sizes} != published GUE {GUE_SPLITS[factor]}"
                )
            out[factor] = {
                name: self._split(columns, split, limit, factor)
                for name, split, limit in zip(
                    ("train", "val", "test"), ("train", "dev", "test"), self.SIZES[self.size]
                )
            }
        return out

    def _split(
        self, columns: dict[str, np.ndarray], split: str, limit: int | None, factor: str
    ) -> Split:
        rows = np.flatnonzero(columns["split"] == split)
        if limit is not None:
            rows = np.sort(rng("mtl_gue", self.data_seed, factor, split).permutation(rows)[:limit])
        codes = encode(columns["sequence"][rows].tolist(), LENGTH)
        return Split(one_hot(codes), torch.from_numpy(columns["label"][rows].astype(np.int64)))
