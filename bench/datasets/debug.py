"""``debug``: tiny random vectors for tests. A linear signal makes ERM learn something.

Each environment draws x ~ N(0, I) in 10 dimensions with label = [x . w > 0] for a
fixed w, and shifts the mean by an environment-specific offset, so environments differ.
"""

from __future__ import annotations

import torch

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.hparams import Fixed
from bench.seeding import torch_generator


@register_dataset("debug")
class Debug(MultiEnvDataset):
    VERSION = 1
    ENVIRONMENTS = (
        Environment("e0", {"shift": 0.0}),
        Environment("e1", {"shift": 0.5}),
        Environment("e2", {"shift": 1.0}),
    )
    INPUT_SHAPE = (10,)
    NUM_CLASSES = 2
    FEATURIZER = "mlp"
    N_STEPS = 60
    EVAL_EVERY = 20
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(32, "small for tests"),
        "mlp_depth": Fixed(2, "small for tests"),
        "batch_size": Fixed(32, "small for tests"),
    }

    def build(self) -> dict[str, EnvData]:
        n = 100 if self.size == "tiny" else 500
        w = torch.randn(10, generator=torch_generator(self.NAME, "w"))
        envs = {}
        for env in self.ENVIRONMENTS:
            gen = torch_generator(self.NAME, self.data_seed, env.name)
            x = torch.randn(n, 10, generator=gen) + env.params["shift"]
            y = ((x - env.params["shift"]) @ w > 0).long()
            envs[env.name] = EnvData(x, y)
        return envs
