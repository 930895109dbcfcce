"""CDSprites-N (Shi et al., "Gradient Matching for Domain Generalization", 2022): colour vs shape.

Squares (label 0) and ellipses (label 1) are rendered procedurally on a black 64x64
canvas at dSprites-like latents (6 scales in [0.5, 1], 40 orientations in [0, 2pi),
32x32 positions); dSprites itself is not needed. Each of the N training domains
has its own palette of two colours, one per shape, so colour predicts the label
perfectly inside a domain but differently across domains. ``val`` and ``test``
(the declared test environments) colour each image with a random training palette
and a coin-flip shape->colour assignment, as the Fish code does: colour carries no
label information there, so only shape generalises. Default featurizer: the
paper's CNN of five stride-2 convolutions (``cdsprites_cnn``).

Registered as ``cdsprites_n2``, ``cdsprites_n5``, ``cdsprites_n10`` and ``cdsprites_n15``
(N visible in the leaderboard). Sizes: 1,000 images per training domain and 2,000
each for val and test (tiny: 32 and 64). Images are stored as boolean masks plus
one colour per image, and coloured per batch, so N=15 takes ~80 MB.
Defaults: 2001 steps, evaluation every 100, 32 images per domain per step.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.hparams import IntLogUniform
from bench.seeding import rng

SIZE = 64
SCALES = np.linspace(0.5, 1.0, 6)
ORIENTATIONS = np.linspace(0.0, 2 * math.pi, 40, endpoint=False)
POSITIONS = np.linspace(0.0, 1.0, 32)
SQUARE_HALF = 8.0  # half side in pixels at scale 1
ELLIPSE_AXES = (10.0, 5.0)  # semi-axes in pixels at scale 1
MARGIN = 12.0  # centre range [MARGIN, SIZE - MARGIN] keeps every rotated shape on the canvas


def render(
    shapes: np.ndarray,
    scales: np.ndarray,
    angles: np.ndarray,
    px: np.ndarray,
    py: np.ndarray,
    chunk: int = 2048,
) -> Tensor:
    """Boolean masks (n, 64, 64): shape 0 = square, 1 = ellipse, vectorised over images in
    chunks."""
    grid = np.arange(SIZE, dtype=np.float32) + 0.5
    out = np.empty((len(shapes), SIZE, SIZE), dtype=bool)
    for start in range(0, len(shapes), chunk):
        sl = slice(start, start + chunk)
        cx = (MARGIN + px[sl] * (SIZE - 2 * MARGIN)).astype(np.float32)[:, None, None]
        cy = (MARGIN + py[sl] * (SIZE - 2 * MARGIN)).astype(np.float32)[:, None, None]
        cos = np.cos(angles[sl]).astype(np.float32)[:, None, None]
        sin = np.sin(angles[sl]).astype(np.float32)[:, None, None]
        dx, dy = grid[None, None, :] - cx, grid[None, :, None] - cy
        u, v = cos * dx + sin * dy, -sin * dx + cos * dy
        s = scales[sl].astype(np.float32)[:, None, None]
        square = np.maximum(np.abs(u), np.abs(v)) <= SQUARE_HALF * s
        ellipse = (u / (ELLIPSE_AXES[0] * s)) ** 2 + (v / (ELLIPSE_AXES[1] * s)) ** 2 <= 1.0
        out[sl] = np.where(shapes[sl][:, None, None] == 0, square, ellipse)
    return torch.from_numpy(out)


def sample_masks(n: int, gen: np.random.Generator) -> tuple[Tensor, Tensor]:
    """``n`` balanced-at-random shapes at uniformly drawn dSprites latents: (masks, labels)."""
    shapes = gen.integers(0, 2, n)
    masks = render(
        shapes,
        SCALES[gen.integers(0, len(SCALES), n)],
        ORIENTATIONS[gen.integers(0, len(ORIENTATIONS), n)],
        POSITIONS[gen.integers(0, len(POSITIONS), n)],
        POSITIONS[gen.integers(0, len(POSITIONS), n)],
    )
    return masks, torch.from_numpy(shapes.astype(np.int64))


class ColouredMasks(EnvData):
    """Boolean masks plus one RGB colour per image; ``batch`` paints them into float (b, 3, 64,
    64)."""

    def __init__(self, masks: Tensor, colours: Tensor, y: Tensor, augment=None) -> None:
        super().__init__(masks, y, augment)
        self.colours = colours

    def batch(self, idx: Tensor | None, train: bool = False) -> tuple[Tensor, Tensor]:
        masks, colours, y = (
            (self.x, self.colours, self.y)
            if idx is None
            else (self.x[idx], self.colours[idx], self.y[idx])
        )
        x = masks.unsqueeze(1) * colours[:, :, None, None]
        if train and self.augment is not None:
            x = self.augment(x)
        return x, y

    def to(self, device: torch.device | str) -> "ColouredMasks":
        return ColouredMasks(
            self.x.to(device), self.colours.to(device), self.y.to(device), self.augment
        )


class CDSprites(MultiEnvDataset):
    """Base of the registered ``cdsprites_n{N}`` classes; N_DOMAINS is set by each subclass."""

    VERSION = 1
    N_DOMAINS: ClassVar[int]
    INPUT_SHAPE = (3, SIZE, SIZE)
    NUM_CLASSES = 2
    FEATURIZER = "cdsprites_cnn"
    TEST_ENVS = ("val", "test")
    VALIDATION_ENV = "val"  # the Fish code picks its checkpoint on ``val`` and reports ``test``
    SELECTION = ("val_env", "train_val")
    REFERENCE = (
        "Fish paper (Shi et al. 2022) CdSprites-N at a CPU budget: 1,000 images per "
        "domain (the Fish code's data has "
        "30-120x more), batch 32 per domain, Adam, 2001 steps (Fish code: batch 64, "
        "AMSGrad, 100 epochs)"
    )
    N_STEPS = 2001
    EVAL_EVERY = 100
    HPARAM_OVERRIDES = {
        "batch_size": IntLogUniform(32, "images per domain per step", low=8, high=128)
    }
    PER_DOMAIN, EVAL_SIZE = 1000, 2000
    TINY_PER_DOMAIN, TINY_EVAL_SIZE = 32, 64

    def build(self) -> dict[str, EnvData]:
        tiny = self.size == "tiny"
        # Two distinct colours per domain, bright enough to separate from the black background.
        palettes = torch.from_numpy(
            rng(self.NAME, self.data_seed, "palettes")
            .uniform(0.2, 1.0, (self.N_DOMAINS, 2, 3))
            .astype(np.float32)
        )
        envs: dict[str, EnvData] = {}
        for k, env in enumerate(self.ENVIRONMENTS):
            gen = rng(self.NAME, self.data_seed, env.name)
            if env.name in self.TEST_ENVS:
                masks, y = sample_masks(self.TINY_EVAL_SIZE if tiny else self.EVAL_SIZE, gen)
                domain = torch.from_numpy(gen.integers(0, self.N_DOMAINS, len(y)))
                slot = torch.from_numpy(gen.integers(0, 2, len(y)))  # colour independent of shape
            else:
                masks, y = sample_masks(self.TINY_PER_DOMAIN if tiny else self.PER_DOMAIN, gen)
                domain, slot = torch.full_like(y, k), y
            envs[env.name] = ColouredMasks(masks, palettes[domain, slot], y)
        return envs


def _environments(n: int) -> tuple[Environment, ...]:
    train = tuple(
        Environment(f"d{k}", {"colours": "own palette, one colour per shape"}) for k in range(n)
    )
    random_colours = {"colours": "random training palette, random shape->colour"}
    return train + (Environment("val", random_colours), Environment("test", random_colours))


for _n in (2, 5, 10, 15):
    register_dataset(f"cdsprites_n{_n}")(
        type(
            f"CDSpritesN{_n}",
            (CDSprites,),
            {
                "N_DOMAINS": _n,
                "ENVIRONMENTS": _environments(_n),
                "__doc__": (
                    f"CDSprites-N with N={_n} training domains: colour is spurious, shape is "
                    "invariant."
                ),
            },
        )
    )
