"""The Algorithm contract every method implements (see DESIGN.md, "Algorithm contract")."""

from __future__ import annotations

import copy
from typing import Any, Callable, ClassVar, Iterable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bench import networks
from bench.hparams import NON_NEGATIVE, POSITIVE, Fixed, IntLogUniform, LogUniform, Param
from bench.registry import Registry
from bench.run_data import RunData

# The families ``bench list`` groups algorithms under; every algorithm declares one (FAMILY).
FAMILIES = (
    "baseline",
    "invariance",
    "alignment",
    "robust optimisation",
    "gradient matching",
    "meta-learning",
    "augmentation",
    "regularisation",
    "transfer",
)


class _AlgorithmRegistry(Registry["Algorithm"]):
    """A Registry that also refuses a class whose FAMILY is not one of FAMILIES."""

    def register(self, name: str) -> Callable[[type["Algorithm"]], type["Algorithm"]]:
        register = super().register(name)

        def decorator(cls: type["Algorithm"]) -> type["Algorithm"]:
            family = getattr(cls, "FAMILY", None)
            if family not in FAMILIES:
                raise ValueError(
                    f"algorithm {name!r}: class {cls.__name__} needs FAMILY, one of "
                    f"{', '.join(map(repr, FAMILIES))} (got {family!r})"
                )
            return register(cls)

        return decorator


ALGORITHMS = _AlgorithmRegistry("algorithm", "bench.builtins")
register_algorithm = ALGORITHMS.register

Minibatches = list[tuple[Tensor, Tensor]]

# How a penalty is switched on (shared by IRM, VREx, Fishr).
ANNEALING_HPARAMS: dict[str, Param] = {
    "irm_code": Fixed(
        False,
        "False: DomainBed's schedule (Adam re-created at the anneal step, loss not rescaled). "
        "True: the IRM paper's Colored MNIST code (also Fishr's): loss divided by the "
        "penalty weight once it exceeds 1, no reset",
    ),
}


def classification_loss(logits: Tensor, y: Tensor, reduction: str = "mean") -> Tensor:
    """Cross-entropy; a single logit column means binary labels {0, 1} with BCE (the IRM paper's
    head)."""
    if logits.shape[1] == 1:
        return F.binary_cross_entropy_with_logits(logits[:, 0], y.float(), reduction=reduction)
    return F.cross_entropy(logits, y, reduction=reduction)


def mean_pairwise_cosine(vectors: list[Tensor]) -> float:
    """Mean cosine similarity over all pairs of flattened vectors (one per environment)."""
    unit = F.normalize(torch.stack([v.reshape(-1) for v in vectors]), dim=1)
    gram = unit @ unit.T
    n = len(vectors)
    return float((gram.sum() - gram.diagonal().sum()) / (n * (n - 1)))


def split_by_env(values: Tensor, minibatches: "Minibatches") -> list[Tensor]:
    """Rows of a tensor computed on the concatenated minibatches, split back per environment."""
    return list(values.split([len(y) for _, y in minibatches]))


def predictions(logits: Tensor) -> Tensor:
    """Predicted labels for either head shape."""
    if logits.shape[1] == 1:
        return (logits[:, 0] > 0).long()
    return logits.argmax(dim=1)


def env_losses(logits: Tensor, minibatches: "Minibatches") -> list[Tensor]:
    """Per-environment mean losses of logits computed on the concatenated minibatches."""
    per_env = split_by_env(logits, minibatches)
    return [classification_loss(l, y) for l, (_, y) in zip(per_env, minibatches)]


def concat_inputs(minibatches: "Minibatches") -> Tensor:
    """All environments' inputs in one batch (one forward pass, as DomainBed)."""
    return torch.cat([x for x, _ in minibatches])


class Algorithm(nn.Module):
    """Base class: trains on one minibatch per training environment per ``update``.

    The base builds ``featurizer``, ``classifier``, ``network`` and one Adam ``optimizer``
    over ``parameters_to_optimize()`` (override ``build`` for anything else), predicts with
    ``network`` and applies the ``l2`` hyperparameter in ``minimize``/``apply_gradients``,
    so a subclass writes only its ``update``. State that must survive a resume lives in
    parameters, buffers or optimisers: every ``torch.optim.Optimizer`` attribute is saved
    through ``get_extra_state``. ``self.step`` counts updates (only the base advances it)
    and is checkpointed; schedules key on it.
    """

    VERSION: ClassVar[int] = 1
    NAME: ClassVar[str]
    FAMILY: ClassVar[str]  # one of FAMILIES: the heading ``bench list`` shows it under
    HPARAMS: ClassVar[dict[str, Param]] = {
        "lr": LogUniform(1e-3, "Adam learning rate", low=10**-4.5, high=10**-2.5, domain=POSITIVE),
        "weight_decay": LogUniform(
            0.0, "Adam weight decay", low=1e-6, high=1e-2, domain=NON_NEGATIVE
        ),
        "batch_size": IntLogUniform(
            64,
            "examples per training environment per step (0 = whole environment)",
            low=8,
            high=512,
            domain=NON_NEGATIVE,
        ),
        "l2": Fixed(
            0.0,
            "explicit L2 penalty sum(||w||^2) added to the loss (the IRM paper's regulariser)",
            domain=NON_NEGATIVE,
        ),
        **networks.SHARED_HEAD_SPACE,
    }
    # Declared keys read outside __init__/update (by prepare_run), exempt from check_algorithm's
    # "every declared hparam is read" rule; batch_size is the runner's.
    RUN_HPARAMS: ClassVar[frozenset[str]] = frozenset({"batch_size"})

    def __init__(
        self,
        input_shape: tuple[int, ...],
        num_classes: int,
        num_train_envs: int,
        hparams: Mapping[str, Any],
        *,
        num_unlabeled_envs: int = 0,
    ) -> None:
        super().__init__()
        self.input_shape = tuple(input_shape)
        self.num_classes = num_classes
        self.num_train_envs = num_train_envs
        # Domain adaptation: test envs whose unlabeled minibatches update() receives (DANN's
        # discriminator gives each its own output); 0 in domain generalisation.
        self.num_unlabeled_envs = num_unlabeled_envs
        # copy.copy keeps the mapping's type, so bench.testing's read recorder keeps recording
        self.hparams = copy.copy(hparams) if isinstance(hparams, dict) else dict(hparams)
        self.register_buffer("step", torch.zeros((), dtype=torch.long))
        self._l2_in_loss = False  # set by l2_penalty(): this update's loss already has the l2 term
        self.build()

    def update(
        self, minibatches: Minibatches, unlabeled: list[Tensor] | None = None
    ) -> dict[str, float]:
        """One training step on one ``(x, y)`` minibatch per training environment.

        ``unlabeled`` is None in domain generalisation; in domain adaptation (``uda_fraction``)
        it holds one minibatch of inputs per test environment. DANN, CDANN, CORAL and MMD align
        with it; every other algorithm ignores it (so does DomainBed's every algorithm, which
        takes the argument but never reads it).
        """
        raise NotImplementedError

    def predict(self, x: Tensor) -> Tensor:
        return self.network(x)

    def prepare_run(self, data: RunData) -> dict[str, Any] | None:
        """Called by the runner once, after construction and before any step or resume, with
        the run's data; a stage before training (pretraining) goes here. Returns what spec.json
        records about it under ``transfer`` (None: nothing)."""
        return None

    # -- construction hooks ---------------------------------------------------------------
    def build(self) -> None:
        """Networks and optimisers: ``build_network`` + Adam over ``parameters_to_optimize``."""
        self.build_network()
        self.optimizer = self.make_optimizer(self.parameters_to_optimize())

    def parameters_to_optimize(self) -> Any:
        """Parameters (or parameter groups) of ``self.optimizer``."""
        return self.network.parameters()

    def build_network(self) -> None:
        """``self.featurizer``, ``self.classifier`` and ``self.network`` from the hparams."""
        self.featurizer = networks.build_featurizer(self.input_shape, self.hparams)
        self.classifier = networks.build_classifier(
            self.featurizer.n_outputs, self.num_classes, self.hparams
        )
        self.network = nn.Sequential(self.featurizer, self.classifier)

    def make_optimizer(self, params: Any, lr: float | None = None) -> torch.optim.Optimizer:
        return torch.optim.Adam(
            params,
            lr=self.hparams["lr"] if lr is None else lr,
            weight_decay=self.hparams["weight_decay"],
        )

    # -- one training step ----------------------------------------------------------------
    def minimize(self, loss: Tensor, optimizer: torch.optim.Optimizer | None = None) -> Tensor:
        """Step ``optimizer`` (default ``self.optimizer``) on ``loss`` + l2; returns that sum.

        The l2 term is added here unless ``loss`` already holds it (it was built with
        ``l2_penalty()``, e.g. by ``penalised_loss``, which rescales it with the rest).
        """
        if not self._l2_in_loss:
            loss = loss + self.l2_penalty()
        optimizer = self.optimizer if optimizer is None else optimizer
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.apply_gradients(optimizer)
        return loss

    def apply_gradients(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Step ``optimizer`` on the gradients in ``.grad`` (set them yourself for a custom rule).

        Adds the l2 term's gradient unless this update's loss held it, then counts the update.
        """
        if not self._l2_in_loss and self.hparams["l2"]:
            self.l2_penalty().backward()
        (self.optimizer if optimizer is None else optimizer).step()
        self.finish_update()

    def finish_update(self) -> None:
        """Count one update: the only place ``self.step`` advances (e.g. after Fish's meta step)."""
        self.step += 1
        self._l2_in_loss = False

    def l2_penalty(self, params: Iterable[Tensor] | None = None) -> Tensor:
        """``l2 * sum ||w||^2`` over ``params`` (default: all parameters; zero when ``l2 == 0``).

        Use it only to build this update's loss: it marks the loss as holding the term, so
        ``minimize``/``apply_gradients`` do not add it twice (the mark ends with the update).
        """
        self._l2_in_loss = True
        if self.hparams["l2"] == 0:
            return torch.zeros((), device=self.step.device)
        params = self.parameters() if params is None else params
        return self.hparams["l2"] * sum(p.pow(2).sum() for p in params)

    def penalised_loss(
        self, nll: Tensor, penalty: Tensor, weight: float, anneal_iters: int, before: float = 1.0
    ) -> Tensor:
        """``nll + l2 + w * penalty``, w = ``before`` until step ``anneal_iters`` and ``weight``
        from then on.

        With ``irm_code`` the loss is divided by w when w > 1 (the IRM code); otherwise
        ``self.optimizer`` is re-created at the anneal step (DomainBed: Adam dislikes the
        sudden jump in gradient scale). Call before ``zero_grad``.
        """
        step = int(self.step)
        w = weight if step >= anneal_iters else before
        loss = nll + self.l2_penalty() + w * penalty
        if self.hparams["irm_code"]:
            return loss / w if w > 1.0 else loss
        if step == anneal_iters:
            self.optimizer = self.make_optimizer(self.parameters_to_optimize())
        return loss

    def head_grad_cos(self, env_losses: list[Tensor]) -> dict[str, float]:
        """``{"grad_cos": mean pairwise cosine of the per-environment gradients}`` (empty for one
        env).

        Measured on the classifier head only, every step: backpropagation stops at the
        head, so the diagnostic costs a few small matrix products even for a ResNet.
        The losses' graphs are retained for the caller's own backward.
        """
        if len(env_losses) < 2:
            return {}
        params = [p for p in self.classifier.parameters() if p.requires_grad]
        grads = [
            torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, params, retain_graph=True)])
            for loss in env_losses
        ]
        return {"grad_cos": mean_pairwise_cosine(grads)}

    def head_grad_cos_at(self, minibatches: Minibatches) -> dict[str, float]:
        """``head_grad_cos`` at the current parameters from an extra forward (features without
        grad).

        For methods whose training loss is not a sum of per-environment losses (Fish, Mixup).
        """
        with torch.no_grad():
            features = [self.featurizer(x) for x, _ in minibatches]
        return self.head_grad_cos(
            [classification_loss(self.classifier(f), y) for f, (_, y) in zip(features, minibatches)]
        )

    def get_extra_state(self) -> dict[str, Any]:
        return {
            name: opt.state_dict()
            for name, opt in vars(self).items()
            if isinstance(opt, torch.optim.Optimizer)
        }

    def set_extra_state(self, state: dict[str, Any]) -> None:
        for name, opt_state in state.items():
            getattr(self, name).load_state_dict(opt_state)
