"""Contract, determinism and resume checks for the domain-generalization algorithms."""

from __future__ import annotations

import pytest
import torch

from bench.algorithms import ALGORITHMS
from bench.algorithms.base import classification_loss, mean_pairwise_cosine
from bench.algorithms.fishr import per_sample_grads
from bench.datasets import DATASETS
from bench.errors import UserError
from bench.hparams import sample, space_for
from bench.transfer.recipes import Recipe

# Every registered algorithm; the DG methods are those that are not transfer recipes.
ALL = ALGORITHMS.names()
DG = [name for name in ALL if not issubclass(ALGORITHMS.get(name), Recipe)]
# hparams that put a schedule switch, EMA or discriminator step inside the resumed window
STATEFUL = {
    "irm": {"irm_penalty_anneal_iters": 3},
    "vrex": {"vrex_penalty_anneal_iters": 3},
    "fishr": {"penalty_anneal_iters": 3, "ema": 0.9},
    "dann": {"d_steps_per_g_step": 2, "d_mlp_width": 32},
    "cdann": {"d_steps_per_g_step": 2, "d_mlp_width": 32},
    "lp_ft": {"probe_steps": 3},
    # batch A (issue 17)
    "ib_erm": {"ib_penalty_anneal_iters": 3},
    "ib_irm": {"irm_penalty_anneal_iters": 3, "ib_penalty_anneal_iters": 4},
    "eqrm": {"eqrm_burnin_iters": 3},
    "rdm": {"rdm_penalty_anneal_iters": 3},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def hparams_for(name: str, dataset: str = "debug", hparams_seed: int = 0, **overrides) -> dict:
    hp = sample(
        space_for(ALGORITHMS.get(name), DATASETS.get(dataset)), name, dataset, hparams_seed, 0
    )
    hp.update(overrides)
    return hp


def batches(
    n_envs: int, n: int, seed: int, dim: int = 10
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for e in range(n_envs):
        x = torch.randn(n, dim, generator=g) + 0.3 * e
        out.append((x, (x[:, 0] > 0.3 * e).long()))
    return out


def test_the_dg_methods_are_found_in_the_registry():
    assert {"erm", "irm", "vrex", "fishr", "dann"} <= set(DG) and "finetune" not in DG


@pytest.mark.parametrize("name", ALL)
def test_random_search_sample_trains(name):
    hp = hparams_for(name, hparams_seed=1)
    for key, param in space_for(ALGORITHMS.get(name), DATASETS.get("debug")).items():
        param.validate(key, hp[key])
    torch.manual_seed(0)
    alg = ALGORITHMS.get(name)((10,), 2, 2, hp)
    for step in range(2):
        stats = alg.update(batches(2, 16, step))
    assert all(torch.isfinite(torch.tensor(v)) for v in stats.values())


@pytest.mark.parametrize("name", DG)
def test_one_logit_head_and_grad_cos(name):
    """cmnist_irm's head: one logit + BCE. Every method trains on it and reports grad_cos."""
    torch.manual_seed(0)
    alg = ALGORITHMS.get(name)((10,), 1, 3, hparams_for(name))
    for step in range(3):
        stats = alg.update(batches(3, 16, step))
    assert "grad_cos" in stats and -1.0 <= stats["grad_cos"] <= 1.0
    assert alg.predict(torch.randn(5, 10)).shape == (5, 1)


@pytest.mark.parametrize("name", ALL)
def test_resume_across_schedule_switch(name):
    """Stop after 2 updates, restore from state_dict into a fresh model, continue: same as
    uninterrupted."""
    hp = hparams_for(name, **STATEFUL.get(name, {}))

    def run(alg, steps):
        for step in steps:
            torch.manual_seed(
                100 + step
            )  # the runner restores torch's RNG state; Mixup draws from it
            alg.update(batches(2, 16, step))

    torch.manual_seed(0)
    straight = ALGORITHMS.get(name)((10,), 2, 2, hp)
    run(straight, range(6))
    torch.manual_seed(0)
    first = ALGORITHMS.get(name)((10,), 2, 2, hp)
    run(first, range(2))
    torch.manual_seed(1)
    resumed = ALGORITHMS.get(name)((10,), 2, 2, hp)
    resumed.load_state_dict(first.state_dict())
    run(resumed, range(2, 6))
    x = torch.randn(8, 10)
    assert torch.allclose(straight.predict(x), resumed.predict(x), atol=1e-5)


# Literals from the reference code, not read back from bench: the IRM repository's
# code/colored_mnist/reproduce_paper_results.sh (IRM, ERM and grayscale-oracle commands)
# and the Fishr repository's coloredmnist/train_coloredmnist.py (defaults = IRM-tuned).
IRM_TUNED = {"mlp_width": 390, "l2": 0.00110794568, "lr": 0.0004898536566546834}
IRM_CODE_ERM = {"mlp_width": 256, "l2": 0.001, "lr": 0.001}
ORACLE = {"mlp_width": 83, "l2": 0.0008602868865288383, "lr": 0.0028171488133821726}
PENALISED = [
    ("irm", "irm_lambda", "irm_penalty_anneal_iters"),
    ("vrex", "vrex_lambda", "vrex_penalty_anneal_iters"),
    ("fishr", "lambda", "penalty_anneal_iters"),
]


def _defaults(algorithm: str, dataset: str) -> dict:
    return sample(
        space_for(ALGORITHMS.get(algorithm), DATASETS.get(dataset)), algorithm, dataset, 0, 0
    )


@pytest.mark.parametrize("dataset", ["cmnist_irm", "cmnist_fishr"])
def test_irm_data_penalised_methods_use_the_irm_papers_tuned_settings(dataset):
    for name, weight_key, anneal_key in PENALISED:
        hp = _defaults(name, dataset)
        assert {k: hp[k] for k in IRM_TUNED} == IRM_TUNED
        assert (hp[weight_key], hp[anneal_key], hp["batch_size"], hp["irm_code"]) == (
            91257.18613115903,
            190,
            0,
            True,
        )
    assert (
        _defaults("vrex", dataset)["vrex_penalty"] == "squared_difference"
    )  # the Fishr code's (R0 - R1)^2
    assert _defaults("fishr", dataset)["ema"] == 0.0


def test_irm_data_conventions_for_everything_else():
    """cmnist_irm: ERM (and every untuned method) at the IRM code's ERM flags; cmnist_fishr: at the
    IRM-tuned ones."""
    for name in ("erm", "coral", "group_dro"):
        assert {k: _defaults(name, "cmnist_irm")[k] for k in IRM_CODE_ERM} == IRM_CODE_ERM
        assert {k: _defaults(name, "cmnist_fishr")[k] for k in IRM_TUNED} == IRM_TUNED
    oracle = _defaults("erm", "cmnist_irm_gray")
    assert {k: oracle[k] for k in ORACLE} == ORACLE
    assert (
        DATASETS.get("cmnist_irm_gray").N_STEPS,
        DATASETS.get("cmnist_irm").N_STEPS,
        DATASETS.get("cmnist_fishr").N_STEPS,
    ) == (101, 501, 501)


def test_vrex_squared_difference_penalty_is_four_times_the_variance_for_two_envs():
    torch.manual_seed(0)
    batches = [(torch.randn(32, 2, 14, 14), torch.randint(0, 2, (32,))) for _ in range(2)]
    values = {}
    for form in ("variance", "squared_difference"):
        torch.manual_seed(1)
        hp = {**_defaults("vrex", "cmnist_irm"), "vrex_penalty": form}
        values[form] = ALGORITHMS.get("vrex")((2, 14, 14), 1, 2, hp).update(batches)["penalty"]
    assert values["squared_difference"] == pytest.approx(4 * values["variance"], rel=1e-5)
    with pytest.raises(UserError, match="exactly 2 training environments"):
        ALGORITHMS.get("vrex")((2, 14, 14), 1, 3, {**_defaults("vrex", "cmnist_irm")})


@pytest.mark.parametrize("n_outputs", [1, 3])
def test_fishr_per_sample_grads_match_a_loop(n_outputs):
    torch.manual_seed(0)
    head = torch.nn.Linear(5, n_outputs)
    f = torch.randn(7, 5, requires_grad=True)
    y = torch.randint(0, max(n_outputs, 2), (7,))
    loop = torch.stack(
        [
            torch.cat(
                [
                    g.reshape(-1)
                    for g in torch.autograd.grad(
                        classification_loss(head(f[i : i + 1]), y[i : i + 1]),
                        list(head.parameters()),
                        create_graph=True,
                    )
                ]
            )
            for i in range(7)
        ]
    )
    fast = per_sample_grads(head, f, y)
    assert torch.allclose(fast, loop, atol=1e-6)
    # differentiable with respect to the features, as the penalty needs
    assert torch.allclose(
        torch.autograd.grad(fast.pow(2).sum(), f)[0],
        torch.autograd.grad(loop.pow(2).sum(), f)[0],
        atol=1e-5,
    )


def test_mean_pairwise_cosine():
    e1, e2 = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    assert mean_pairwise_cosine([e1, e1]) == pytest.approx(1.0)
    assert mean_pairwise_cosine([e1, -e1]) == pytest.approx(-1.0)
    assert mean_pairwise_cosine([e1, e2, e1]) == pytest.approx(1 / 3)


def test_fish_meta_step_moves_meta_lr_of_the_way_to_the_inner_weights():
    torch.manual_seed(0)
    fish = ALGORITHMS.get("fish")((10,), 2, 2, hparams_for("fish", meta_lr=0.1))
    before = [p.detach().clone() for p in fish.network.parameters()]
    fish.update(batches(2, 16, 0))
    for b, after, inner in zip(before, fish.network.parameters(), fish.inner.parameters()):
        assert torch.allclose(after, b + 0.1 * (inner - b), atol=1e-6)
    assert any(not torch.equal(b, p) for b, p in zip(before, fish.network.parameters()))


def test_irm_penalty_vanishes_at_the_optimal_scale():
    """The IRMv1 penalty is the squared derivative of the risk w.r.t. a classifier scale: zero at
    its optimum."""
    from bench.algorithms.irm import irm_penalty

    torch.manual_seed(0)
    s = torch.randn(4000)
    y = (torch.rand(4000) < torch.sigmoid(2.0 * s)).long()
    assert irm_penalty((2.0 * s)[:, None], y, full_batch=True) < 1e-3
    assert irm_penalty((6.0 * s)[:, None], y, full_batch=True) > 1e-2
    # the half-split product estimates the same quantity
    assert (
        abs(
            irm_penalty((6.0 * s)[:, None], y, full_batch=False)
            - irm_penalty((6.0 * s)[:, None], y, full_batch=True)
        )
        < 0.02
    )
