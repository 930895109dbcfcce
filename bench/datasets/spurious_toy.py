"""``spurious_toy``: Colored MNIST without MNIST, the default benchmark's dataset.

The IRM paper's Colored MNIST construction (Arjovsky et al., 2019) on generated vectors,
so that theory says exactly what each method should reach:

- an invariant feature ``shape`` z in {0, 1} (the digit being < 5); the label is
  y = z flipped with probability 0.25 in every environment, so z alone is 75%
  accurate everywhere: the invariant ceiling;
- a spurious feature ``colour`` c = y flipped with probability e: it agrees with the
  label 90% (``train_0.1``) and 80% (``train_0.2``) of the time in the two training
  environments and 10% in ``test`` (e = 0.9);
- ``N_NOISE`` pure-noise dimensions N(0, 1).

Input: (2z - 1, 2c - 1) + N(0, 0.1^2) per coordinate, then the noise: 2 + 3 = 5 dims.
On the pooled training data colour (85%) beats shape (75%), and the Bayes classifier
predicts the colour whenever the two disagree: ERM's expected test accuracy is 10%,
an invariant predictor's 75%. The test environment's classes are balanced (chance 50%).

``spurious_toy_oracle`` is the same draw with the colour coordinate removed (as
``cmnist_irm_gray`` is for ``cmnist_irm``): ERM on it is the upper bound, ~75%.

Protocol: full batch, tiny MLP (one hidden layer of 16), 301 Adam steps, evaluation every
25, holdout 20% of every environment (training-domain validation, ``train_val``).
The invariance methods' settings (``ALGORITHM_HPARAMS``) were chosen by
``benchmarks/spurious_toy_search.py`` under training-domain validation only; see there.
"""

from __future__ import annotations

import numpy as np
import torch

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.hparams import Fixed
from bench.seeding import rng


def _flip(gen: np.random.Generator, bits: np.ndarray, p: float) -> np.ndarray:
    return bits ^ (gen.random(len(bits)) < p)


# Chosen by constrained training-domain validation from the grid in
# benchmarks/spurious_toy_search.py (never the test environment): among the grid points whose two
# training environments' held-out accuracies differ by <= 2 points, the best mean held-out accuracy
# (3 trials). Regenerate with:
#   PYTHONPATH=. nice -n 10 python benchmarks/spurious_toy_search.py
# The table it chose from is in that script's docstring. The penalty is on from the first step
# (anneal 0): with a warm-up, training-domain validation picks the warm-up's ERM-like checkpoints.
SEARCHED_HPARAMS: dict[str, dict[str, object]] = {
    "irm": {"lr": 0.01, "irm_lambda": 100.0, "irm_penalty_anneal_iters": 0},
    "vrex": {"lr": 0.01, "vrex_lambda": 10000.0, "vrex_penalty_anneal_iters": 0},
    "fishr": {"lr": 0.01, "lambda": 100000.0, "penalty_anneal_iters": 0, "ema": 0.0},
}


def _declared(table: dict[str, dict[str, object]]) -> dict[str, dict[str, Fixed]]:
    return {
        a: {
            k: Fixed(v, "spurious_toy default (benchmarks/spurious_toy_search.py)")
            for k, v in hp.items()
        }
        for a, hp in table.items()
    }


@register_dataset("spurious_toy")
class SpuriousToy(MultiEnvDataset):
    """Colored-MNIST-like vectors: invariant shape (75%), colour agreeing 90% / 80% in training
    and 10% at test."""

    VERSION = 1
    ENVIRONMENTS = (
        Environment("train_0.1", {"colour_flip": 0.1, "label_noise": 0.25}),
        Environment("train_0.2", {"colour_flip": 0.2, "label_noise": 0.25}),
        Environment("test", {"colour_flip": 0.9, "label_noise": 0.25}),
    )
    TEST_ENVS = ("test",)
    N_NOISE = 3
    INPUT_SHAPE = (2 + N_NOISE,)
    NUM_CLASSES = 2
    BINARY_LOGIT = True
    FEATURIZER = "mlp"
    N_STEPS = 301
    EVAL_EVERY = 25
    HOLDOUT_FRACTION = 0.2
    PER_ENV, TINY = 5000, 400
    STREAM = "spurious_toy"  # the oracle draws the very same data
    ORACLE: str | None = (
        "spurious_toy_oracle"  # the dataset without the spurious feature (bench/interpret.py)
    )
    INVARIANT_CEILING = 0.75  # accuracy of the invariant feature alone, in every environment
    HPARAM_OVERRIDES = {
        "batch_size": Fixed(
            0, "full batch: the whole training split of every environment each step"
        ),
        "lr": Fixed(0.01, "Adam learning rate for the tiny MLP"),
        "mlp_width": Fixed(16, "tiny MLP: a handful of inputs"),
        "mlp_depth": Fixed(1, "one hidden layer"),
        "mlp_dropout": Fixed(0.0, "no dropout"),
    }
    ALGORITHM_HPARAMS = _declared(SEARCHED_HPARAMS)

    def n(self) -> int:
        return self.TINY if self.size == "tiny" else self.PER_ENV

    def build(self) -> dict[str, EnvData]:
        return {
            env.name: self._finish(self.draw(env, rng(self.STREAM, self.data_seed, env.name)))
            for env in self.ENVIRONMENTS
        }

    def draw(self, env: Environment, gen: np.random.Generator) -> EnvData:
        n = self.n()
        shape = gen.integers(0, 2, n)
        y = _flip(gen, shape, env.params["label_noise"])
        colour = _flip(gen, y, env.params["colour_flip"])
        signal = np.stack([2.0 * shape - 1, 2.0 * colour - 1], axis=1) + gen.normal(
            0.0, 0.1, (n, 2)
        )
        x = np.concatenate([signal, gen.normal(0.0, 1.0, (n, self.N_NOISE))], axis=1)
        return EnvData(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)))

    def _finish(self, env: EnvData) -> EnvData:
        return env


@register_dataset("spurious_toy_oracle")
class SpuriousToyOracle(SpuriousToy):
    """The oracle: ``spurious_toy``'s very data with the colour coordinate removed (the upper
    bound, ~75%)."""

    VERSION = 1
    INPUT_SHAPE = (1 + SpuriousToy.N_NOISE,)
    ORACLE = None
    ORACLE_OF = "spurious_toy"

    def _finish(self, env: EnvData) -> EnvData:
        return EnvData(torch.cat([env.x[:, :1], env.x[:, 2:]], dim=1), env.y)
