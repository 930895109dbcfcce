"""Built-in transfer tasks (see bench/transfer/tasks.py): source -> target pairs for
pretrain-then-adapt."""

from __future__ import annotations

import numpy as np
import torch

from bench.datasets.base import EnvData, Environment
from bench.datasets.files import MNISTFiles, load_mnist
from bench.hparams import Fixed
from bench.transfer.tasks import TransferTask, env_task, register_task


def _mnist_digits(x: np.ndarray, y: np.ndarray, digits: range, limit: int | None) -> EnvData:
    """Images of ``digits`` in MNIST order as 1x28x28 floats in [0, 1], labels renumbered from 0."""
    keep = np.flatnonzero(np.isin(y, list(digits)))[:limit]
    images = torch.from_numpy(x[keep]).float().div_(255.0).unsqueeze(1)
    return EnvData(images, torch.from_numpy(y[keep].astype(np.int64) - digits.start))


@register_task("mnist_ab")
class MnistAB(MNISTFiles, TransferTask):
    """MNIST class split of Yosinski et al. (2014): digits 0-4 (task A, source) -> digits 5-9
    (task B, target)."""

    VERSION = 1
    ENVIRONMENTS = (
        Environment("target", {"digits": "5-9", "split": "train"}),
        Environment("target_test", {"digits": "5-9", "split": "test"}),
    )
    TEST_ENVS = ("target_test",)
    INPUT_SHAPE = (1, 28, 28)
    NUM_CLASSES = 5
    FEATURIZER = "mlp"
    N_STEPS = 600
    EVAL_EVERY = 200
    SOURCE_ID = "mnist_ab"
    SOURCE_CLASSES = 5
    MODALITY = "image"
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(
            128, "Yosinski-style layer transfer on a small 4-block MLP (CPU budget)"
        ),
        "mlp_depth": Fixed(4, "L = 4 transferable blocks"),
        "pretrain_steps": Fixed(600, "as long as the target training"),
    }

    def _limits(self) -> tuple[int | None, int | None]:
        return (300, 200) if self.size == "tiny" else (None, None)

    def build_target(self) -> tuple[EnvData, EnvData, dict[str, EnvData]]:
        x_train, y_train, x_test, y_test = load_mnist(self.root, self.download)
        train_limit, test_limit = self._limits()
        return (
            _mnist_digits(x_train, y_train, range(5, 10), train_limit),
            _mnist_digits(x_test, y_test, range(5, 10), test_limit),
            {},
        )

    def build_source(self) -> EnvData:
        x_train, y_train, _, _ = load_mnist(self.root, self.download)
        return _mnist_digits(x_train, y_train, range(0, 5), 600 if self.size == "tiny" else None)


GUE_HUMAN = tuple(f"human_tf_{k}" for k in range(5))
env_task(
    "gue_human_mouse",
    "gue_tf",
    source=GUE_HUMAN,
    target="mouse_tf_0",
    modality="sequence",
    doc="GUE TF binding: pretrain on the five human TF tasks pooled, adapt to mouse TF 0 "
    "(species and factor shift)",
)
env_task(
    "genomic_toy_shift",
    "genomic_toy",
    source=("gc35", "gc45"),
    target="gc55",
    ood=("gc65",),
    modality="sequence",
    doc="Generated motifs: pretrain on GC 35%/45% backgrounds, adapt to GC 55%; GC 65% is "
    "the OOD split",
)
for _component in ("both", "a_only", "b_only", "conflict"):
    env_task(
        f"bottleneck_to_{_component}",
        "bottleneck_toy",
        source=("both", "a_only", "b_only", "conflict"),
        target=_component,
        shots=(),
        overrides={
            "mlp_width": Fixed(4, "the feature bottleneck: 4 hidden units (64 keeps both features)")
        },
        doc="Feature bottleneck (Yang, Zhang & Bottou 2025): pretrain on the mixture of the "
        f"four distributions, adapt to {_component}",
    )
_PACS_STYLES = {"sketch": "sketch", "art": "art_painting", "cartoon": "cartoon"}
for _short, _style in _PACS_STYLES.items():
    env_task(
        f"pacs_photo_to_{_short}",
        "pacs",
        source=("photo",),
        target=_style,
        ood=tuple(s for s in _PACS_STYLES.values() if s != _style),
        modality="image",
        doc=f"PACS: pretrain on photos, adapt to {_style}; the other two styles are OOD splits",
    )
