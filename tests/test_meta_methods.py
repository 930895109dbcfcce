"""Meta-learning methods against their defining properties."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bench.meta.base import METHODS
from bench.meta.episodes import Episode
from bench.meta.methods.maml import query_loss
from bench.meta.runner import run
from bench.meta.spec import make_meta_spec, method_space

TINY_MLP = {"featurizer": "mlp", "mlp_width": 3, "mlp_depth": 1, "mlp_dropout": 0.0}


def _hparams(method: str, **values) -> dict:
    space = method_space(method, "subspace")
    return {**{k: p.default for k, p in space.items()}, **TINY_MLP, **values}


def test_maml_second_order_meta_gradient_matches_finite_differences():
    """d/dtheta of L_query(theta - a grad L_support(theta)) (two inner steps), in float64."""
    torch.manual_seed(0)
    maml = METHODS.get("maml")((2,), 2, 4, _hparams("maml")).double()
    gen = torch.Generator().manual_seed(1)
    episode = Episode(
        torch.randn(4, 2, generator=gen, dtype=torch.float64),
        torch.tensor([0, 0, 1, 1]),
        torch.randn(6, 2, generator=gen, dtype=torch.float64),
        torch.tensor([0, 1, 0, 1, 0, 1]),
        (0, 1),
    )
    params = dict(maml.net.named_parameters())

    def loss(values: dict) -> torch.Tensor:
        return query_loss(maml.net, values, episode, steps=2, lr=0.5, first_order=False)

    analytic = torch.autograd.grad(loss(params), list(params.values()))
    eps = 1e-6
    for (name, p), grad in zip(params.items(), analytic):
        for i in range(p.numel()):
            shifted = []
            for sign in (1, -1):
                q = p.detach().clone().flatten()
                q[i] += sign * eps
                values = {**params, name: q.view_as(p).requires_grad_()}
                shifted.append(loss(values).item())
            numeric = (shifted[0] - shifted[1]) / (2 * eps)
            assert grad.flatten()[i].item() == pytest.approx(numeric, rel=1e-5, abs=1e-8), name


def test_protonet_predicts_the_class_of_the_nearest_prototype_not_the_nearest_example():
    protonet = METHODS.get("protonet")((2,), 3, 4, _hparams("protonet"))
    protonet.featurizer = nn.Identity()  # embeddings = inputs: the rule is visible by hand
    support = torch.tensor([[0.0, 0], [10, 0], [3, 0], [3, 0], [0, 5], [0, 7]])
    support_y = torch.tensor([0, 0, 1, 1, 2, 2])  # prototypes (5, 0), (3, 0), (0, 6)
    # (1, 0): nearest example (0, 0) is class 0, nearest prototype (3, 0) class 1.
    # (4.5, 0): nearest example (3, 0) is class 1, nearest prototype (5, 0) class 0.
    query = torch.tensor([[1.0, 0], [4.5, 0], [0, 5.2], [9, 1]])
    logits = protonet.adapt_predict(support, support_y, query)
    assert logits.argmax(1).tolist() == [1, 0, 2, 0]
    prototypes = torch.tensor([[5.0, 0], [3, 0], [0, 6]])
    assert torch.allclose(logits, -((query[:, None] - prototypes[None]) ** 2).sum(-1))


@pytest.fixture(scope="module")
def subspace_accuracies(tmp_path_factory, one_thread) -> dict[str, float]:
    """5-way 1-shot on the generated family, same trial seed (so the same meta-test episodes)."""
    out = tmp_path_factory.mktemp("meta")
    accs = {}
    for method in ("scratch", "protonet", "maml"):
        spec = make_meta_spec(
            method,
            "subspace",
            5,
            1,
            10,
            steps=150,
            eval_every=75,
            val_episodes=5,
            test_episodes=30,
            size="tiny",
        )
        accs[method] = run(spec, out).test["eval"]["acc"]
    return accs


@pytest.mark.parametrize("method", ["protonet", "maml"])
def test_meta_learning_beats_training_from_scratch_when_tasks_share_structure(
    subspace_accuracies, method
):
    assert subspace_accuracies[method] > subspace_accuracies["scratch"] + 0.2, subspace_accuracies
