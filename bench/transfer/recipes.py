"""The adaptation-recipe base class: a featurizer + new linear head whose first blocks start from
pretraining.

A recipe is an ``Algorithm`` (registered in ``ALGORITHMS`` by
``bench/transfer/builtin_recipes.py``) with two policy hooks: how many featurizer
blocks are copied from the pretrained checkpoint and which blocks are frozen. The
runner calls ``prepare_run`` once the network is built, with the run's data (``RunData``:
the task, whose source it builds, and the target's splits); it loads (or trains and
caches) the checkpoint named by the pretraining hparams and returns what spec.json
records about it. The head is always new: source and target label spaces differ.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar

import torch

from bench.algorithms.base import Algorithm, Minibatches, classification_loss
from bench.errors import UserError
from bench.hparams import (
    AT_LEAST_ONE,
    NON_NEGATIVE,
    POSITIVE,
    Domain,
    Fixed,
    LogUniform,
    Param,
    Setting,
)
from bench.networks import featurizer_space
from bench.run_data import RunData
from bench.transfer.blocks import block_parameters, named_blocks
from bench.transfer.diagnostics import BlockDiagnostics
from bench.transfer.pretrain import OBJECTIVES, PretrainSpec, ensure_pretrained
from bench.transfer.tasks import TransferTask, concat_envs


class Recipe(Algorithm):
    """Base recipe: copies ``copied_blocks`` pretrained blocks, freezes ``frozen_blocks``, trains
    the rest."""

    VERSION = 1
    PRETRAINED: ClassVar[bool] = True
    HPARAMS: ClassVar[dict[str, Param]] = {
        "pretrain_data": Setting(
            "source",
            "pretrain on the task's source, or on the target's own training inputs "
            "(self-pretraining)",
            options=("source", "target"),
        ),
        "pretrain_objective": Setting(
            "supervised",
            "supervised on labels, or masked-input prediction (self-supervised)",
            options=OBJECTIVES,
        ),
        "pretrain_steps": Fixed(1000, "pretraining steps", domain=NON_NEGATIVE),
        "pretrain_lr": Fixed(1e-3, "pretraining Adam learning rate", domain=POSITIVE),
        "pretrain_batch_size": Fixed(128, "pretraining batch size", domain=AT_LEAST_ONE),
        "mask_ratio": Fixed(
            0.5,
            "fraction of input positions hidden by the masked objective",
            domain=Domain(0, 1, open_low=True),
        ),
        "pretrained_lr_mult": LogUniform(
            1.0,
            "learning-rate multiplier of the copied (pretrained) blocks",
            low=0.01,
            high=1.0,
            domain=NON_NEGATIVE,
        ),
    }

    # Read by prepare_run (pretraining), not during updates.
    RUN_HPARAMS = Algorithm.RUN_HPARAMS | {
        "pretrain_data",
        "pretrain_objective",
        "pretrain_steps",
        "pretrain_lr",
        "pretrain_batch_size",
        "mask_ratio",
    }

    def __init__(self, input_shape, num_classes, num_train_envs, hparams):
        super().__init__(input_shape, num_classes, num_train_envs, hparams)
        blocks = {name: block_parameters(m) for name, m in self.blocks}
        self.diagnostics = BlockDiagnostics({**blocks, "head": list(self.classifier.parameters())})
        self.train()  # puts the frozen blocks' norm layers in eval mode from the first step

    def build_network(self) -> None:
        """The network, then the recipe's policy: which blocks are copied, which frozen."""
        super().build_network()
        self.blocks = named_blocks(self.featurizer)
        n_blocks = len(self.blocks)
        self.n_copied = self.copied_blocks(n_blocks) if self.PRETRAINED else 0
        self.frozen = self.frozen_blocks(n_blocks)
        if not 0 <= self.n_copied <= n_blocks:
            raise UserError(
                f"{self.NAME}: n must lie in [0, {n_blocks}] for this featurizer "
                f"(blocks: {', '.join(self.block_names)}), got {self.n_copied}"
            )
        for i, (_, modules) in enumerate(self.blocks):
            for p in block_parameters(modules):
                p.requires_grad_(i not in self.frozen)

    def parameters_to_optimize(self) -> list[dict[str, Any]]:
        """The new head and fresh blocks at ``lr``; copied blocks at ``lr * pretrained_lr_mult``."""
        copied, fresh = [], list(self.classifier.parameters())
        for i, (_, modules) in enumerate(self.blocks):
            if i not in self.frozen:
                (copied if i < self.n_copied else fresh).extend(block_parameters(modules))
        lr = self.hparams["lr"]
        copied_lr = lr * self.hparams["pretrained_lr_mult"]
        groups = [{"params": fresh, "lr": lr}]
        return groups + [{"params": copied, "lr": copied_lr}] if copied else groups

    @property
    def block_names(self) -> list[str]:
        return [name for name, _ in self.blocks]

    # -- policy ---------------------------------------------------------------------------
    def copied_blocks(self, n_blocks: int) -> int:
        """How many featurizer blocks, from the input, start from the pretrained weights."""
        return n_blocks

    def frozen_blocks(self, n_blocks: int) -> set[int]:
        """Indices (0 = nearest the input) of blocks never updated."""
        return set()

    def before_update(self) -> None:
        """Phase changes keyed on ``self.step`` (LP-FT)."""

    def train(self, mode: bool = True) -> "Recipe":
        """Frozen blocks stay in eval mode: a BatchNorm's running statistics are weights too."""
        super().train(mode)
        for i in self.frozen:
            for module in self.blocks[i][1]:
                module.train(False)
        return self

    # -- training -------------------------------------------------------------------------
    def update(self, minibatches: Minibatches, unlabeled=None) -> dict[str, float]:
        self.before_update()
        x = torch.cat([x for x, _ in minibatches])
        y = torch.cat([y for _, y in minibatches])
        nll = classification_loss(self.network(x), y)
        loss = nll + self.l2_penalty()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        diagnostics = self.diagnostics.measure()  # reads the gradients, so before the step
        self.apply_gradients()
        return {"loss": loss.item(), "nll": nll.item(), **diagnostics}

    # -- pretraining ----------------------------------------------------------------------
    def prepare_run(self, data: RunData) -> dict[str, Any]:
        """Load the first ``n_copied`` blocks from the cached pretrained featurizer (training it on
        a miss)."""
        info: dict[str, Any] = {
            "recipe": self.NAME,
            "blocks": self.block_names,
            "frozen_blocks": [self.block_names[i] for i in sorted(self.frozen)],
        }
        weights = self.hparams.get("weights", "none")
        if (
            weights != "none"
        ):  # the featurizer was built with --weights: they replace the pretraining stage
            for _, modules in self.blocks[self.n_copied :]:
                for module in modules:
                    module.reset_parameters()
            self.diagnostics.set_reference()
            return {
                **info,
                "pretrained": f"weights:{weights}",
                "copied_blocks": self.block_names[: self.n_copied],
            }
        if self.n_copied == 0:
            return {**info, "pretrained": None, "copied_blocks": []}
        pspec, load_data = self._pretrain_spec(data)
        device = self.step.device
        state = ensure_pretrained(pspec, data.cache_dir, self.input_shape, load_data, device)
        qualified = {id(m): name for name, m in self.featurizer.named_modules()}
        with torch.no_grad():
            for _, modules in self.blocks[: self.n_copied]:
                for module in modules:
                    prefix = qualified[id(module)]
                    module.load_state_dict({k: state[f"{prefix}.{k}"] for k in module.state_dict()})
        self.diagnostics.set_reference()
        return {
            **info,
            "pretrained": pspec.pretrain_id,
            "pretrain": pspec.to_dict(),
            "copied_blocks": self.block_names[: self.n_copied],
        }

    def _pretrain_spec(self, data: RunData) -> tuple[PretrainSpec, Callable[[], Any]]:
        """The pretraining stage's spec (its content-addressed id) and how to load its data on a
        cache miss: the task's source, or the target's own training rows."""
        hp, spec, dataset = self.hparams, data.spec, data.dataset
        if hp["pretrain_data"] == "source":
            if not isinstance(dataset, TransferTask):
                raise UserError(
                    f"{spec.dataset} is not a transfer task, so it has no source to "
                    "pretrain on; use pretrain_data='target' (self-pretraining) or a "
                    "task from `bench list`"
                )
            described = {
                "dataset": dataset.SOURCE_ID,
                "part": "source",
                "data_seed": spec.data_seed,
                "size": spec.size,
                "version": dataset.VERSION,
            }

            def load_data():
                return dataset.build_source(), dataset.SOURCE_CLASSES
        else:
            described = {
                "dataset": spec.dataset,
                "part": "target",
                "envs": data.train_envs,
                "data_seed": spec.data_seed,
                "size": spec.size,
                "version": spec.dataset_version,
                "trial_seed": spec.trial_seed,
                "holdout_fraction": spec.holdout_fraction,
            }

            def load_data():
                rows = [data.train_rows(name) for name in data.train_envs]
                return concat_envs(rows), type(dataset).NUM_CLASSES

        keys = ["featurizer", "init", *featurizer_space(hp["featurizer"])]
        pspec = PretrainSpec(
            objective=hp["pretrain_objective"],
            data=described,
            featurizer={k: hp[k] for k in keys if k in hp},
            modality=getattr(
                dataset,
                "MODALITY",
                {3: "image", 2: "sequence"}.get(len(self.input_shape), "vector"),
            ),
            steps=hp["pretrain_steps"],
            lr=hp["pretrain_lr"],
            batch_size=hp["pretrain_batch_size"],
            mask_ratio=hp["mask_ratio"],
            seed=spec.trial_seed,
        )
        return pspec, load_data
