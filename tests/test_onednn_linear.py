"""``--precision fp32-onednn``: linear layers in oneDNN, equal to fp32 up to rounding."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bench import onednn_linear, records, runner
from bench.errors import UserError
from bench.execution import check_precision, precision_context
from bench.spec import RuntimeOptions, make_spec

pytestmark = pytest.mark.skipif(not onednn_linear.available(), reason="no oneDNN in this build")


def _mlp(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Linear(30, 40),
        torch.nn.ReLU(),
        torch.nn.Linear(40, 40),
        torch.nn.ReLU(),
        torch.nn.Linear(40, 2),
    )


def _loss_and_grads(net: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    net.zero_grad()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in net.parameters()]


def test_every_linear_product_runs_in_onednn_inside_the_mode(monkeypatch):
    calls = []
    matmul = onednn_linear._matmul
    monkeypatch.setattr(onednn_linear, "_matmul", lambda *a: calls.append(1) or matmul(*a))
    net, x = _mlp(), torch.randn(64, 30)
    _loss_and_grads(net, x, torch.randint(2, (64,)))
    assert calls == []  # outside the mode, torch's own kernels
    with onednn_linear.OneDnnLinear():
        _loss_and_grads(net, x, torch.randint(2, (64,)))
    # 3 forward products, 3 weight gradients, 2 input gradients (the data needs none)
    assert len(calls) == 8


def test_results_equal_fp32_up_to_rounding_and_repeat_exactly():
    x, y = torch.randn(2000, 30), torch.randint(2, (2000,))
    exact = _mlp().double()
    want_loss, want = _loss_and_grads(exact, x.double(), y)
    fp32_loss, fp32 = _loss_and_grads(_mlp(), x, y)
    with onednn_linear.OneDnnLinear():
        loss, grads = _loss_and_grads(_mlp(), x, y)
        again_loss, again = _loss_and_grads(_mlp(), x, y)
    assert torch.equal(loss, again_loss) and all(map(torch.equal, grads, again))
    for g, g32, g64 in zip(grads, fp32, want):
        scale = g64.abs().max().item()
        # as close to the float64 truth as torch's own fp32 is
        assert (g.double() - g64).abs().max().item() <= 1e-5 * scale + 4 * (
            g32.double() - g64
        ).abs().max().item()
    assert loss.item() == pytest.approx(want_loss.item(), rel=1e-6)


def test_the_weight_gradient_adds_its_row_chunks_in_order(monkeypatch):
    monkeypatch.setattr(onednn_linear, "WEIGHT_GRAD_ROWS", 7)  # 50 rows: 7 chunks and a rest
    dy, x = torch.randn(50, 4, dtype=torch.float32), torch.randn(50, 3)
    got = onednn_linear._weight_grad(dy, x)
    assert torch.allclose(got, dy.T @ x, atol=1e-5)
    assert onednn_linear._weight_grad(dy[:0], x[:0]).shape == (4, 3)


def test_frozen_layers_higher_derivatives_and_transforms_stay_exact_paths():
    w, b = torch.randn(5, 3, requires_grad=True), torch.randn(5)
    x = torch.randn(2, 7, 3, requires_grad=True)  # leading dims beyond the batch

    def second_derivative():
        out = F.linear(x, w, bias=b).tanh().sum()
        (gx,) = torch.autograd.grad(out, x, create_graph=True)
        return torch.autograd.grad(gx.pow(2).sum(), w)[0]

    want = second_derivative()
    with onednn_linear.OneDnnLinear():
        got = second_derivative()
        out = F.linear(x, w.detach(), b)  # frozen weights: only the input's gradient
        out.sum().backward()
        batched = torch.func.vmap(lambda r: F.linear(r, w))(torch.randn(6, 4, 3))  # torch's own
    assert torch.allclose(got, want, atol=1e-5)
    assert x.grad.shape == x.shape and out.shape == (2, 7, 5)
    assert batched.shape == (6, 4, 5)


def test_a_run_is_its_own_identity_and_repeats_exactly(tmp_path):
    def train(precision: str, out: str):
        spec = make_spec("irm", "debug", size="tiny", steps=12, eval_every=6, precision=precision)
        options = RuntimeOptions(output_dir=tmp_path / out, threads=1, progress=False)
        outcome = runner.run(spec, options)
        assert outcome.status == "ok"
        assert records.read_json(outcome.run_dir / records.SPEC)["spec"]["precision"] == precision
        kept = []
        for rec in records.read_records(outcome.run_dir / records.RESULTS):
            rec.pop("wall_s")
            kept.append(rec)
        return spec.run_id, kept

    fp32_id, _ = train("fp32", "a")
    onednn_id, first = train("fp32-onednn", "b")
    same_id, second = train("fp32-onednn", "c")
    assert onednn_id != fp32_id and onednn_id == same_id
    assert len(first) == 3 and first == second  # same seed, same numbers


def test_a_device_that_cannot_run_it_is_refused_in_one_line():
    with pytest.raises(UserError, match="CPU kernel choice; on cuda use fp32 or bf16"):
        check_precision(torch.device("cuda"), "fp32-onednn")
    check_precision(torch.device("cuda"), "bf16")  # other precisions are not this check's
    assert isinstance(
        precision_context(torch.device("cpu"), "fp32-onednn"), onednn_linear.OneDnnLinear
    )


def test_a_torch_without_the_kernel_refuses_the_precision_in_one_line(monkeypatch):
    monkeypatch.setattr(onednn_linear, "available", lambda: False)
    monkeypatch.setattr("bench.execution.onednn_available", lambda: False)
    with pytest.raises(UserError, match="needs oneDNN's fp32 linear kernel"):
        check_precision(torch.device("cpu"), "fp32-onednn")
