"""Small vector datasets whose answer is known: which features a method should keep.

All labels are binary, s = 2y - 1, and noise is Gaussian. Each environment is drawn
from its own stream (dataset, data_seed, environment). MLP featurizer (width 64,
depth 2), 1001 steps, evaluation every 100.

- ``fish_toy``, after the linear example of Shi et al. (Fish, 2022): three input
  types. invariant: x_inv = s + N(0, 1) in every domain (~84% alone); spurious: one
  coordinate per training domain, equal to s (+ N(0, 0.1)) in its own domain and
  N(0, 1) elsewhere, so each domain has a perfect shortcut that the other domains'
  gradients disagree with; random: two N(0, 1) coordinates. Input: 1 + 3 + 2 = 6 dims.
  Three training domains; ``test`` has no shortcut, so only x_inv transfers.
- ``irm_sem``, an IRM-style linear structural equation model (Arjovsky et al., 2019,
  section 5.1, as classification): causes x_inv ~ N(0, I_5), y = [w . x_inv + N(0, 0.5) > 0]
  with w = 1/sqrt(5); effects x_spu = sign_e * s * 1_5 + N(0, sigma_e^2 I_5). Training
  environments have sign +1 and sigma 0.5 or 1.5 (the mechanism's noise varies: a
  cue that is more reliable than x_inv but not invariant); in ``test`` sign = -1.
- ``bottleneck_toy``, the feature-bottleneck setting of Yang, Zhang & Bottou (2025,
  "These are not all the features you are looking for"): two features a and b
  (x = (a, b) + N(0, 0.3^2 I)) and four distributions, declared as environments so a
  transfer stage can pretrain on a mixture and adapt to each: ``both`` (a = b = s),
  ``a_only`` (b random), ``b_only`` (a random), ``conflict`` (a = s, b = -s). A mixture
  is solved by one feature (a alone is right on 7/8 of the uniform mixture; on
  ``both`` either suffices), so a sparse pretrained representation keeps one of them
  and linear probing on the component that needs the other fails.
  The four-component construction is ours, written from the paper's description.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.hparams import Fixed
from bench.seeding import rng


def _signs(gen: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    y = gen.integers(0, 2, n)
    return y, (2 * y - 1).astype(np.float32)


def _env_data(x: np.ndarray, y: np.ndarray) -> EnvData:
    return EnvData(torch.from_numpy(x.astype(np.float32)), torch.from_numpy(y.astype(np.int64)))


class CausalToy(MultiEnvDataset):
    VERSION = 1
    NUM_CLASSES = 2
    FEATURIZER = "mlp"
    N_STEPS = 1001
    EVAL_EVERY = 100
    PER_ENV, TINY = 2000, 200
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(64, "small: the toys have a handful of inputs"),
        "mlp_depth": Fixed(2, "two hidden layers"),
        "mlp_dropout": Fixed(0.0, "no dropout"),
    }

    def n(self) -> int:
        return self.TINY if self.size == "tiny" else self.PER_ENV

    def build(self) -> dict[str, EnvData]:
        return {
            env.name: self.draw(env, rng(self.NAME, self.data_seed, env.name))
            for env in self.ENVIRONMENTS
        }

    def draw(self, env: Environment, gen: np.random.Generator) -> EnvData:
        raise NotImplementedError


@register_dataset("fish_toy")
class FishToy(CausalToy):
    """Invariant, domain-specific spurious and random inputs (after Fish's linear example)."""

    ENVIRONMENTS = (
        Environment("d0", {"shortcut": 0}),
        Environment("d1", {"shortcut": 1}),
        Environment("d2", {"shortcut": 2}),
        Environment("test", {"shortcut": None}),
    )
    TEST_ENVS = ("test",)
    N_SPURIOUS, N_RANDOM = 3, 2
    INPUT_SHAPE = (1 + N_SPURIOUS + N_RANDOM,)

    def draw(self, env: Environment, gen: np.random.Generator) -> EnvData:
        n = self.n()
        y, s = _signs(gen, n)
        invariant = s[:, None] + gen.normal(0.0, 1.0, (n, 1))
        spurious = gen.normal(0.0, 1.0, (n, self.N_SPURIOUS))
        if env.params["shortcut"] is not None:
            spurious[:, env.params["shortcut"]] = s + gen.normal(0.0, 0.1, n)
        random = gen.normal(0.0, 1.0, (n, self.N_RANDOM))
        return _env_data(np.concatenate([invariant, spurious, random], axis=1), y)


@register_dataset("irm_sem")
class IRMSem(CausalToy):
    """Linear SEM: invariant causes of y, spurious effects whose mechanism changes per
    environment."""

    ENVIRONMENTS = (
        Environment("sigma_0.5", {"sign": 1.0, "sigma": 0.5}),
        Environment("sigma_1.5", {"sign": 1.0, "sigma": 1.5}),
        Environment("test", {"sign": -1.0, "sigma": 0.5}),
    )
    TEST_ENVS = ("test",)
    DIM = 5
    INPUT_SHAPE = (2 * DIM,)

    def draw(self, env: Environment, gen: np.random.Generator) -> EnvData:
        n = self.n()
        causes = gen.normal(0.0, 1.0, (n, self.DIM))
        y = (causes.sum(1) / math.sqrt(self.DIM) + gen.normal(0.0, 0.5, n) > 0).astype(np.int64)
        s = (2 * y - 1).astype(np.float32)
        effects = env.params["sign"] * s[:, None] + gen.normal(
            0.0, env.params["sigma"], (n, self.DIM)
        )
        return _env_data(np.concatenate([causes, effects], axis=1), y)


@register_dataset("bottleneck_toy")
class BottleneckToy(CausalToy):
    """Two features, four distributions; mixtures are solved by one feature (Yang, Zhang & Bottou,
    2025)."""

    ENVIRONMENTS = (
        Environment("both", {"a": "label", "b": "label"}),
        Environment("a_only", {"a": "label", "b": "random"}),
        Environment("b_only", {"a": "random", "b": "label"}),
        Environment("conflict", {"a": "label", "b": "flipped"}),
    )
    INPUT_SHAPE = (2,)
    NOISE = 0.3

    def draw(self, env: Environment, gen: np.random.Generator) -> EnvData:
        n = self.n()
        y, s = _signs(gen, n)
        random = np.where(gen.random(n) < 0.5, -1.0, 1.0).astype(np.float32)
        value = {"label": s, "random": random, "flipped": -s}
        x = np.stack([value[env.params["a"]], value[env.params["b"]]], axis=1) + gen.normal(
            0.0, self.NOISE, (n, 2)
        )
        return _env_data(x, y)
