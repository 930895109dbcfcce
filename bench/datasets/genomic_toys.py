"""Generated genomic tasks: planted motifs on backgrounds whose composition shifts per environment.

Background: an order-1 Markov chain over A, C, G, T with GC fraction ``gc`` and the CpG
dinucleotide scaled by ``cpg`` (so both base and k-mer statistics shift). Each sequence
(100 bp) carries one motif of 10 bp sampled from a position weight matrix (0.85 on a
consensus base, 0.05 elsewhere) at a uniform position: motif A for label 1, decoy B
for label 0, the two consensuses drawn once per dataset.

- ``genomic_toy``: four environments, the label is the motif; only the background
  shifts (GC 0.35 -> 0.65, CpG depletion 0.2 -> 1.5). Leave one out.
- ``genomic_toy_spurious``: Colored-MNIST's structure on DNA. The motif gives
  z ~ Bernoulli(0.5), the label is z flipped with probability 0.25 (the motif is
  75% predictive everywhere) and the background GC is 0.6 when c = label flipped
  with probability e, else 0.4. e = 0.1 and 0.2 in the training environments (GC is
  ~85% predictive there) and 0.9 in ``test``: ERM leans on GC and fails out of
  distribution; an invariant predictor keeps ~75%.
Generation is vectorised over sequences (the Markov chain loops over 100 positions).
Inputs are one-hot 4 x 100 (reverse-complement augmentation as in ``genomic``).
Sizes: 5,000 sequences per environment (tiny: 400). Defaults: seq_cnn, 2001 steps, eval every 100.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import Tensor

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.datasets.genomic import SequenceEnvData, reverse_complement
from bench.hparams import Choice
from bench.seeding import rng

SEQ_LEN, MOTIF_LEN = 100, 10


def markov_background(n: int, gc: float, cpg: float, gen: np.random.Generator) -> np.ndarray:
    """uint8 codes (n, SEQ_LEN) from an order-1 chain: base probabilities by GC, C->G scaled by
    ``cpg``."""
    base = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    transition = np.tile(base, (4, 1))
    transition[1, 2] *= cpg
    cumulative = np.cumsum(transition / transition.sum(1, keepdims=True), axis=1)
    codes = np.empty((n, SEQ_LEN), dtype=np.uint8)
    codes[:, 0] = (gen.random((n, 1)) > np.cumsum(base)).sum(1)
    for t in range(1, SEQ_LEN):
        codes[:, t] = (gen.random((n, 1)) > cumulative[codes[:, t - 1]]).sum(1)
    return np.minimum(codes, 3)  # guards the cumulative sum's last entry against rounding


def pwm(consensus: np.ndarray, peak: float = 0.85) -> np.ndarray:
    """(MOTIF_LEN, 4) position weight matrix with ``peak`` on the consensus base."""
    matrix = np.full((len(consensus), 4), (1 - peak) / 3)
    matrix[np.arange(len(consensus)), consensus] = peak
    return matrix


def plant(
    codes: np.ndarray, matrix: np.ndarray, rows: np.ndarray, gen: np.random.Generator
) -> None:
    """Write one motif sampled from ``matrix`` at a uniform position into each of ``rows`` (in
    place)."""
    cumulative = np.cumsum(matrix, axis=1)
    motifs = (gen.random((len(rows), MOTIF_LEN, 1)) > cumulative[None]).sum(2).clip(max=3)
    starts = gen.integers(0, SEQ_LEN - MOTIF_LEN + 1, len(rows))
    codes[rows[:, None], starts[:, None] + np.arange(MOTIF_LEN)] = motifs


class GenomicToy(MultiEnvDataset):
    """Shared generator; subclasses choose how label, motif and background are tied together."""

    VERSION = 1
    INPUT_SHAPE = (4, SEQ_LEN)
    NUM_CLASSES = 2
    FEATURIZER = "seq_cnn"
    N_STEPS = 2001
    EVAL_EVERY = 100
    PER_ENV, TINY = 5000, 400
    HPARAMS = {
        "revcomp": Choice(
            True, "reverse-complement a random half of each training batch", options=(True, False)
        )
    }

    def augmentation(self, hparams: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        return reverse_complement if hparams.get("revcomp") else None

    def motifs(self) -> tuple[np.ndarray, np.ndarray]:
        """(motif A, decoy B) position weight matrices; consensuses differ at every position."""
        gen = rng(self.NAME, self.data_seed, "motifs")
        a = gen.integers(0, 4, MOTIF_LEN)
        b = (a + gen.integers(1, 4, MOTIF_LEN)) % 4
        return pwm(a), pwm(b)

    def sequences(
        self, z: np.ndarray, gc: np.ndarray, cpg: float, gen: np.random.Generator
    ) -> Tensor:
        """Backgrounds at per-row GC (two levels at most), motif A where z == 1 and decoy B
        elsewhere."""
        motif_a, motif_b = self.motifs()
        codes = np.empty((len(z), SEQ_LEN), dtype=np.uint8)
        for level in np.unique(gc):
            rows = np.flatnonzero(gc == level)
            codes[rows] = markov_background(len(rows), float(level), cpg, gen)
        plant(codes, motif_a, np.flatnonzero(z == 1), gen)
        plant(codes, motif_b, np.flatnonzero(z == 0), gen)
        return torch.from_numpy(codes)


@register_dataset("genomic_toy")
class GenomicToyShift(GenomicToy):
    """Planted motif decides the label; GC and CpG statistics of the background shift per
    environment."""

    ENVIRONMENTS = (
        Environment("gc35", {"gc": 0.35, "cpg": 0.2}),
        Environment("gc45", {"gc": 0.45, "cpg": 0.5}),
        Environment("gc55", {"gc": 0.55, "cpg": 1.0}),
        Environment("gc65", {"gc": 0.65, "cpg": 1.5}),
    )

    def build(self) -> dict[str, EnvData]:
        n = self.TINY if self.size == "tiny" else self.PER_ENV
        envs: dict[str, EnvData] = {}
        for env in self.ENVIRONMENTS:
            gen = rng(self.NAME, self.data_seed, env.name)
            y = gen.integers(0, 2, n)
            x = self.sequences(y, np.full(n, env.params["gc"]), env.params["cpg"], gen)
            envs[env.name] = SequenceEnvData(x, torch.from_numpy(y.astype(np.int64)))
        return envs


@register_dataset("genomic_toy_spurious")
class GenomicToySpurious(GenomicToy):
    """Motif is 75% predictive everywhere; GC content agrees with the label in training, disagrees
    in test."""

    ENVIRONMENTS = (
        Environment("train_0.1", {"gc_flip": 0.1, "label_noise": 0.25}),
        Environment("train_0.2", {"gc_flip": 0.2, "label_noise": 0.25}),
        Environment("test", {"gc_flip": 0.9, "label_noise": 0.25}),
    )
    TEST_ENVS = ("test",)
    GC_LOW, GC_HIGH, CPG = 0.4, 0.6, 1.0

    def build(self) -> dict[str, EnvData]:
        n = self.TINY if self.size == "tiny" else self.PER_ENV
        envs: dict[str, EnvData] = {}
        for env in self.ENVIRONMENTS:
            gen = rng(self.NAME, self.data_seed, env.name)
            z = gen.integers(0, 2, n)
            y = z ^ (gen.random(n) < env.params["label_noise"])
            c = y ^ (gen.random(n) < env.params["gc_flip"])
            x = self.sequences(z, np.where(c == 1, self.GC_HIGH, self.GC_LOW), self.CPG, gen)
            envs[env.name] = SequenceEnvData(x, torch.from_numpy(y.astype(np.int64)))
        return envs
