"""Test-time adaptation (bench/posthoc/tta.py): T3A and TENT correct a test-time shift."""

import math

import pytest
import torch
from torch import nn

from bench import records, runner
from bench.errors import UserError
from bench.posthoc import results, tta
from bench.selection import select
from bench.spec import RuntimeOptions, make_spec


class Toy(nn.Module):
    """The parts of an Algorithm the adapters use: featurizer, linear head, predict, hparams."""

    def __init__(self, featurizer: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.featurizer, self.classifier = featurizer, head
        self.hparams = {"lr": 1e-2, "weight_decay": 0.0, "featurizer": "toy"}

    def predict(self, x):
        return self.classifier(self.featurizer(x))


def _rotated_classes(n: int, angle: float, noise: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Two classes at +-(cos a, sin a): the trained head (x > 0) misses the rotation."""
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (n,), generator=g)
    centre = torch.tensor([math.cos(angle), math.sin(angle)])
    x = (2 * y.float() - 1)[:, None] * centre + noise * torch.randn(n, 2, generator=g)
    return x, y


def _accuracy(predict, x, y, batch=32) -> float:
    return tta.stream(predict, x, y, batch)["acc"]


def _unadapted(model):
    return lambda x: tta.class_logits(model.predict(x)).argmax(1)


def test_t3a_prototypes_follow_a_rotated_test_domain():
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        head.bias.zero_()
    model = Toy(nn.Identity(), head)
    x, y = _rotated_classes(2000, math.radians(60), 0.5)
    before = _accuracy(_unadapted(model), x, y)
    after = _accuracy(tta.adapter(model, tta.resolve("t3a")), x, y)
    assert before < 0.86 and after > before + 0.08, (before, after)


def test_t3a_on_a_single_logit_head_matches_its_two_class_form():
    single = nn.Linear(2, 1)
    with torch.no_grad():
        single.weight.copy_(torch.tensor([[2.0, 0.0]]))
        single.bias.zero_()
    double = nn.Linear(2, 2)
    with torch.no_grad():
        double.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        double.bias.zero_()
    x, y = _rotated_classes(500, math.radians(60), 0.5)
    config = tta.resolve("t3a", {"filter_k": 20})
    one = tta.stream(tta.adapter(Toy(nn.Identity(), single), config), x, y, 32)
    two = tta.stream(tta.adapter(Toy(nn.Identity(), double), config), x, y, 32)
    assert one == two


def _bn_model() -> Toy:
    """BatchNorm trained (running stats) on centred data; head: the sign of feature 0."""
    bn = nn.BatchNorm1d(2)
    head = nn.Linear(2, 2)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]))
        head.bias.zero_()
    return Toy(bn, head).eval()


def test_tent_corrects_a_shifted_and_scaled_test_domain():
    model = _bn_model()
    x, y = _rotated_classes(1024, 0.0, 0.5)
    shifted = 3.0 * x + torch.tensor([6.0, -2.0])  # the running stats no longer centre it
    before = _accuracy(_unadapted(model), shifted, y)
    after = _accuracy(tta.adapter(model, tta.resolve("tent")), shifted, y)
    assert before < 0.6 and after > 0.9, (before, after)


def test_tent_with_zero_steps_leaves_the_model_unchanged():
    model = _bn_model()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    x, y = _rotated_classes(256, 0.0, 0.5)
    shifted = 3.0 * x + torch.tensor([6.0, -2.0])
    adapt = tta.adapter(model, tta.resolve("tent", {"steps": 0}))
    assert _accuracy(adapt, shifted, y) == _accuracy(_unadapted(model), shifted, y)
    for key, value in adapt.model.state_dict().items():
        assert torch.equal(value, state[key]), key
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_tent_refuses_a_featurizer_without_normalisation_layers():
    with pytest.raises(UserError, match="tent adapts normalisation layers; featurizer 'toy'"):
        tta.adapter(Toy(nn.Linear(2, 2), nn.Linear(2, 2)), tta.resolve("tent"))


def test_bad_configurations_are_one_line_errors():
    with pytest.raises(UserError, match="unknown test-time adaptation"):
        tta.resolve("tta")
    with pytest.raises(UserError, match="filter_k"):
        tta.resolve("t3a", {"filter_k": 0})
    with pytest.raises(UserError, match="steps"):
        tta.resolve("tent", {"steps": -1})


def test_adapting_a_run_stores_a_row_beside_it(tmp_path):
    spec = make_spec("erm", "debug", size="tiny", steps=21, eval_every=10)
    out = tmp_path / "out"
    outcome = runner.run(spec, RuntimeOptions(output_dir=out, progress=False, threads=1))
    path = tta.adapt_run(outcome.run_dir, "t3a")
    assert path.parent == outcome.run_dir / results.POSTHOC
    (row,) = results.derived_runs(out, [_loaded(outcome)])
    assert row.spec["algorithm"] == "erm + t3a" and row.status == "ok"
    assert row.records[0]["step"] == 20 and row.records[0]["posthoc"]["filter_k"] == 100
    (chosen,) = select([row], "train_val")
    assert chosen.algorithm == "erm + t3a" and chosen.acc is not None
    assert tta.adapt_run(outcome.run_dir, "t3a") == path  # same config: same result
    with pytest.raises(UserError, match="featurizer 'mlp' has none"):
        tta.adapt_run(outcome.run_dir, "tent")


def _loaded(outcome):
    from bench.report_files import load_runs

    (run,) = load_runs(outcome.run_dir.parent.parent)
    assert run.status == "ok" and records.check_run(outcome.run_dir)[0] == "ok"
    return run


def test_a_run_whose_data_changed_is_not_adapted(tmp_path, monkeypatch):
    spec = make_spec("erm", "debug", size="tiny", steps=11, eval_every=10)
    outcome = runner.run(spec, RuntimeOptions(output_dir=tmp_path, progress=False, threads=1))
    monkeypatch.setattr("bench.posthoc.trained.dataset_fingerprint", lambda *a: "sha256:other")
    with pytest.raises(UserError, match="differs from the run's"):
        tta.adapt_run(outcome.run_dir, "t3a")
