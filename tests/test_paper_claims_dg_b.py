"""Behavioural tests for DomainBed's algorithms of issue 17, batch B: what each paper claims, on
toys small enough to run in seconds, compared with ERM on the same data, seed and network.

- RSC mutes each example's most-relied-on features, and so keeps predicting when they are
  muted; ERM, trained on the same data, does not.
- MLDG's update direction is G_i(theta) + beta * G_j(theta') (checked by finite differences).
- MTL and ARM predict from the environment's marginal: on environments whose decision
  threshold moves with their mean, they beat ERM, and the same input gets another prediction
  in another environment's batch (never for ERM).
- ERM++ starts by training the head only, then predicts with the uniform weight average.
- Network pieces: SagNet's front/last-block split reproduces each featurizer it supports; ARM's
  extra input channel leaves a pretrained featurizer unchanged on a zero context.
- Transfer learns features on which the heads near its classifier have a smaller gap between
  environment losses than near ERM's (the paper's transferability measure).
- Resume is exact across each schedule and piece of state (TRM's alpha, ERM++'s average,
  MTL's embeddings, ADRMX's alternation, Transfer's adversary).
Without a paper-claim test, because no claim of theirs shows on a toy in seconds: TRM (lower
transfer risk across environments) needs the long training on real shifts it describes;
ADRMX's invariant features (label minus domain features) still gave the environment away to
a probe as well as ERM's after 300 steps on a 2-d toy (93% vs 93-94%); SagNet's style
randomisation changed the content head's sensitivity to mixed feature statistics by a factor
0.2-1.4 over three seeds on a 2-d toy (no consistent sign); URM's adversary, on a 2-d toy in
300 steps, did not make the features closer to uniform (KS distance to U(0, 1) rose from 0.55
to 0.69). Their mechanics are covered by the contract checks (bench.testing.check_algorithm)
and the resume test below.
"""

from __future__ import annotations

import copy

import pytest
import torch
from test_invariance import ToyFlip  # small MLP, lr 1e-2, one logit
from test_paper_claims import accuracy, shifted_envs

from bench.algorithms import ALGORITHMS, arm, erm_pp
from bench.algorithms.base import classification_loss, predictions
from bench.algorithms.mldg import meta_pairs
from bench.algorithms.rsc import rsc_mask
from bench.algorithms.sagnet import split_featurizer
from bench.algorithms.transfer_dg import project_
from bench.datasets import DATASETS
from bench.hparams import sample, space_for
from bench.networks import build_featurizer

SEEDS = (0, 1)
Envs = list[tuple[torch.Tensor, torch.Tensor]]

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def train(name: str, seed: int, envs: Envs, steps: int, batch: int = 64, **overrides):
    """``name`` with ToyFlip's network settings on ``envs``, ``batch`` rows per environment."""
    torch.manual_seed(seed)
    cls = ALGORITHMS.get(name)
    hp = {**sample(space_for(cls, ToyFlip), name, ToyFlip.NAME, 0, 0), **overrides}
    algorithm = cls(tuple(envs[0][0].shape[1:]), 1, len(envs), hp)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        algorithm.update(
            [(x[i], y[i]) for x, y in envs for i in [torch.randint(len(y), (batch,), generator=g)]]
        )
    return algorithm.eval()


# -- RSC ---------------------------------------------------------------------------------------


def test_rsc_mutes_the_features_with_the_largest_true_class_gradient():
    """A linear head whose weights rank the features: the top quarter is muted, and only for the
    half of the batch whose confidence drops most."""
    torch.manual_seed(0)
    head = torch.nn.Linear(8, 2)
    with torch.no_grad():
        head.weight.copy_(torch.stack([-torch.arange(8.0), torch.arange(8.0)]))
        head.bias.zero_()
    features = torch.rand(6, 8, requires_grad=True)
    y = torch.ones(6, dtype=torch.long)  # d(true logit)/d(feature k) = k
    mask = rsc_mask(features, head, y, feature_drop=0.25, batch_drop=0.5)
    muted = mask.sum(dim=1) < 8
    assert int(muted.sum()) == 3  # half the batch
    assert torch.all(mask[muted][:, 6:] == 0) and torch.all(mask[muted][:, :6] == 1)
    assert torch.all(mask[~muted] == 1)
    with torch.no_grad():  # true-class probability lost by muting the top quarter
        kept = features * torch.tensor([1.0] * 6 + [0.0] * 2)
        drop = head(features).softmax(1)[:, 1] - head(kept).softmax(1)[:, 1]
    assert set(drop.topk(3).indices.tolist()) == set(torch.nonzero(muted)[:, 0].tolist())


def dominant_feature_envs(seed: int, n: int = 1000) -> Envs:
    """x0 gives the label almost always; x1..x4 each only weakly (all five agree on average)."""
    g = torch.Generator().manual_seed(seed)
    envs = []
    for _ in range(2):
        y = torch.randint(0, 2, (n,), generator=g)
        sign = 2.0 * y - 1
        strong = 2 * sign[:, None] + 0.5 * torch.randn(n, 1, generator=g)
        weak = 0.6 * sign[:, None] + torch.randn(n, 4, generator=g)
        envs.append((torch.cat([strong, weak], dim=1), y))
    return envs


def accuracy_with_top_features_muted(algorithm, envs: Envs, fraction: float) -> float:
    """Accuracy when every example loses its ``fraction`` of features with the largest
    true-class gradient (the model's most relied-on features)."""
    hits = []
    for x, y in envs:
        features = algorithm.featurizer(x).detach().requires_grad_(True)
        mask = rsc_mask(features, algorithm.classifier, y, fraction, batch_drop=1 - 1e-9)
        with torch.no_grad():
            hits.append((predictions(algorithm.classifier(features * mask)) == y).float())
    return torch.cat(hits).mean().item()


def test_rsc_keeps_predicting_when_its_dominant_features_are_muted_and_erm_does_not():
    for seed in SEEDS:
        envs = dominant_feature_envs(seed)
        erm = train("erm", seed, envs, 200, mlp_width=32)
        rsc = train("rsc", seed, envs, 200, mlp_width=32)
        assert accuracy(rsc, envs) > 0.99 and accuracy(erm, envs) > 0.99
        erm_muted, rsc_muted = (
            accuracy_with_top_features_muted(a, envs, 1 / 3) for a in (erm, rsc)
        )
        assert rsc_muted > 0.99 and erm_muted < rsc_muted - 0.03, (seed, erm_muted, rsc_muted)


# -- MLDG --------------------------------------------------------------------------------------


def finite_difference_grad(loss_fn, params: list[torch.Tensor], eps: float = 1e-6) -> list:
    grads = []
    for p in params:
        g = torch.zeros_like(p)
        for i in range(p.numel()):
            original = p.view(-1)[i].item()
            p.view(-1)[i] = original + eps
            up = loss_fn()
            p.view(-1)[i] = original - eps
            down = loss_fn()
            p.view(-1)[i] = original
            g.view(-1)[i] = (up - down) / (2 * eps)
        grads.append(g)
    return grads


def test_mldg_meta_gradient_matches_finite_differences():
    """Three environments, one meta-test: sum over the two pairs of (G_i(theta) + beta *
    G_j(theta')) / 3, theta' = theta after one fresh Adam step (lr * sign(G_i))."""
    torch.manual_seed(0)
    cls = ALGORITHMS.get("mldg")
    hp = sample(space_for(cls, ToyFlip), "mldg", ToyFlip.NAME, 0, 0)
    hp.update(n_meta_test=1, mldg_beta=0.7, lr=0.05)
    mldg = cls((3,), 2, 3, hp).double()
    g = torch.Generator().manual_seed(1)
    mbs = [
        (torch.randn(5, 3, generator=g).double(), torch.randint(0, 2, (5,), generator=g))
        for _ in range(3)
    ]
    torch.manual_seed(7)
    pairs = meta_pairs(mbs, 1)
    torch.manual_seed(7)
    got, _ = mldg.meta_gradient(mbs)

    params = [p.detach().clone() for p in mldg.network.parameters()]
    net = mldg.network

    def loss_at(values, env):
        with torch.no_grad():
            for p, v in zip(net.parameters(), values):
                p.copy_(v)
            x, y = mbs[env]
            return torch.nn.functional.cross_entropy(net(x), y).item()

    def grad_at(point, env):
        return finite_difference_grad(lambda: loss_at(point, env), point)

    expected = [torch.zeros_like(p) for p in params]
    for i, j in pairs:
        g_i = grad_at(params, i)
        inner = [p - hp["lr"] * gi / (gi.abs() + 1e-8) for p, gi in zip(params, g_i)]
        g_j = grad_at(inner, j)
        for e, gi, gj in zip(expected, g_i, g_j):
            e += (gi + hp["mldg_beta"] * gj) / 3
    assert len(pairs) == 2
    for e, gv in zip(expected, got):
        torch.testing.assert_close(gv, e, atol=1e-6, rtol=1e-5)


# -- MTL and ARM -------------------------------------------------------------------------------

SHIFTS = (-2.0, 0.0, 2.0)  # training environments; the test environment has shift 1


def moving_threshold_envs(seed: int, shifts=SHIFTS, n: int = 500) -> Envs:
    """x ~ N(shift, I) in 2-d, label [x0 > shift]: the decision threshold moves with the
    environment's mean, so no single function of x fits every environment, but x and the
    environment's marginal together do."""
    g = torch.Generator().manual_seed(seed)
    envs = []
    for shift in shifts:
        x = torch.randn(n, 2, generator=g) + shift
        envs.append((x, (x[:, 0] > shift).long()))
    return envs


def logits_in_context(algorithm, probe: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """The probe's logits when predicted in one batch with ``context`` (an odd total size, so ARM
    treats the batch as one group)."""
    with torch.no_grad():
        return algorithm.predict(torch.cat([context, probe]))[len(context) :]


@pytest.mark.parametrize("name", ["mtl", "arm"])
def test_marginal_methods_adapt_to_the_environment_and_erm_cannot(name):
    for seed in SEEDS:
        envs = moving_threshold_envs(seed)
        test = moving_threshold_envs(seed + 10, shifts=(1.0,))
        erm, method = train("erm", seed, envs, 300), train(name, seed, envs, 300)
        assert accuracy(method, test) > accuracy(erm, test) + 0.1, (
            seed,
            accuracy(method, test),
            accuracy(erm, test),
        )
        probe = torch.tensor([[0.5, 0.5]])  # above the threshold at shift 0, below at shift 1.5
        low, high = moving_threshold_envs(seed + 20, shifts=(0.0, 1.5), n=100)
        for algorithm, adapts in ((method, True), (erm, False)):
            a, b = (logits_in_context(algorithm, probe, x) for x, _ in (low, high))
            assert (predictions(a) != predictions(b)).item() is adapts, (name, seed, adapts)


def test_arm_widens_a_pretrained_featurizer_without_changing_it_on_a_zero_context():
    """A pretrained ResNet keeps its weights; the context channel starts as a copy of channel
    0's filters, so a zero context leaves the features unchanged."""
    torch.manual_seed(0)
    featurizer = build_featurizer((3, 32, 32), {"featurizer": "resnet18"}).eval()
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        before = featurizer(x)
        arm.add_input_channel(featurizer)
        after = featurizer(torch.cat([x, torch.zeros(2, 1, 32, 32)], dim=1))
    torch.testing.assert_close(after, before)


# -- SagNet ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, shape",
    [
        ("mlp", (5,)),
        ("mnist_cnn", (2, 28, 28)),
        ("small_cnn", (3, 32, 32)),
        ("cdsprites_cnn", (3, 64, 64)),
        ("resnet18", (3, 32, 32)),
    ],
)
def test_sagnet_splits_each_featurizer_into_front_and_last_block(name, shape):
    torch.manual_seed(0)
    featurizer = build_featurizer(shape, {"featurizer": name, "mlp_depth": 2}).eval()
    front, last = split_featurizer(featurizer)
    x = torch.rand(2, *shape)
    with torch.no_grad():
        torch.testing.assert_close(last(front(x)), featurizer(x))
        assert front(x).dim() == (2 if name == "mlp" else 4)  # style = per-channel statistics
    if name == "resnet18":
        assert last[0] is featurizer.network.layer4
    else:  # the last block is the last weight layer and what follows it
        weights = [m for m in last.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))]
        assert len(weights) == 1 and last[0] is weights[0]


def test_sagnet_keeps_a_split_resnets_batchnorm_frozen():
    cls = ALGORITHMS.get("sagnet")
    space = space_for(cls, DATASETS.get("pacs"), featurizer="resnet18")
    hp = {**sample(space, "sagnet", "pacs", 0, 0), "freeze_bn": True}
    sagnet = cls((3, 32, 32), 7, 2, hp).train()
    norms = [m for m in sagnet.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and sagnet.training


# -- ERM++ -------------------------------------------------------------------------------------


def test_erm_pp_trains_the_head_first_then_predicts_with_the_weight_average(monkeypatch):
    """Linear probing for ``linear_steps`` + 1 steps (featurizer frozen), then the uniform average
    of the weights from step AVERAGE_FROM - 2 on (DomainBed's bookkeeping)."""
    monkeypatch.setattr(erm_pp, "AVERAGE_FROM", 6)
    envs = shifted_envs(0)
    torch.manual_seed(0)
    cls = ALGORITHMS.get("erm_pp")
    hp = {**sample(space_for(cls, ToyFlip), "erm_pp", ToyFlip.NAME, 0, 0), "linear_steps": 2}
    algorithm = cls((2,), 1, 2, hp)
    start = [p.detach().clone() for p in algorithm.featurizer.parameters()]
    snapshots = []
    for step in range(10):
        algorithm.update([(x[step::10], y[step::10]) for x, y in envs])
        snapshots.append([p.detach().clone() for p in algorithm.network.parameters()])
        moved = any(not torch.equal(p, q) for p, q in zip(start, algorithm.featurizer.parameters()))
        assert moved is (step > 2), step  # the featurizer first moves at step linear_steps + 1
    for i, averaged in enumerate(algorithm.average.parameters()):
        expected = torch.stack([s[i] for s in snapshots[4:]]).mean(dim=0)
        torch.testing.assert_close(averaged, expected)
    x = envs[0][0][:8]
    with torch.no_grad():
        assert torch.equal(algorithm.predict(x), algorithm.average(x))
        assert not torch.equal(algorithm.predict(x), algorithm.network(x))


# -- Transfer ----------------------------------------------------------------------------------


def worst_gap_near_the_classifier(algorithm, envs: Envs, radius: float = 2.0) -> float:
    """The largest max_e loss_e - min_e loss_e found by 100 projected ascent steps over heads
    within ``radius`` of the classifier, on the frozen features (the paper's transfer measure)."""
    with torch.no_grad():
        features = [algorithm.featurizer(x) for x, _ in envs]
    adversary = copy.deepcopy(algorithm.classifier)
    optimizer = torch.optim.SGD(adversary.parameters(), lr=0.1)

    def gap() -> torch.Tensor:
        losses = [classification_loss(adversary(f), y) for f, (_, y) in zip(features, envs)]
        return torch.stack(losses).max() - torch.stack(losses).min()

    for _ in range(100):
        optimizer.zero_grad()
        (-gap()).backward()
        optimizer.step()
        project_(adversary, algorithm.classifier, radius)
    return gap().item()


@pytest.mark.slow  # trains for several seconds; the fast subset leaves it out
def test_transfer_learns_features_on_which_nearby_heads_have_a_smaller_loss_gap():
    """ToyFlip's two training environments differ in how often the spurious feature agrees with
    the label; heads near the classifier that lean on it have unequal losses across them."""
    for seed in SEEDS:
        data = ToyFlip(None, seed)
        envs = [data.envs[name].batch(None) for name in ("e0.1", "e0.2")]
        erm, transfer = train("erm", seed, envs, 300), train("transfer_dg", seed, envs, 300)
        erm_gap, transfer_gap = (worst_gap_near_the_classifier(a, envs) for a in (erm, transfer))
        assert transfer_gap < 0.6 * erm_gap, (seed, transfer_gap, erm_gap)
        assert accuracy(transfer, envs) > accuracy(erm, envs) - 0.02


# -- resume across the schedules of batch B ----------------------------------------------------

# Overrides that make each piece of state matter across the resume at step 2 (as
# test_algorithms.STATEFUL): TRM's transfer weights alpha (from step 1), ERM++'s weight average
# (from step 1, AVERAGE_FROM patched to 2) and end of probing (step 3), MTL's embeddings,
# ADRMX's alternation (2 discriminator steps per model step by default).
SWITCHES = {
    "trm": {"iters": 1, "groupdro_eta": 1.0},
    "erm_pp": {"linear_steps": 2},
    "mtl": {"mtl_ema": 0.5},
    "adrmx": {"d_mlp_width": 32},
    "transfer_dg": {"d_steps_per_g": 2},
}


@pytest.mark.parametrize("name", sorted(SWITCHES))
def test_resume_across_batch_b_schedules_is_exact(name, monkeypatch):
    from test_algorithms import batches, hparams_for

    monkeypatch.setattr(erm_pp, "AVERAGE_FROM", 2)
    hp = hparams_for(name, **SWITCHES[name])

    def run(algorithm, steps):
        for step in steps:
            torch.manual_seed(100 + step)  # the runner restores torch's RNG state
            algorithm.update(batches(3, 16, step))  # alpha needs 3 environments

    cls = ALGORITHMS.get(name)
    torch.manual_seed(0)
    straight = cls((10,), 2, 3, hp)
    run(straight, range(6))
    torch.manual_seed(0)
    first = cls((10,), 2, 3, hp)
    run(first, range(2))
    torch.manual_seed(1)
    resumed = cls((10,), 2, 3, hp)
    resumed.load_state_dict(first.state_dict())
    run(resumed, range(2, 6))
    x = torch.randn(8, 10)
    with torch.no_grad():
        torch.testing.assert_close(straight.eval().predict(x), resumed.eval().predict(x))
