"""Weight averaging during training (bench/posthoc/averaging.py, swad.py)."""

import dataclasses
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from bench import records, runner
from bench.errors import UserError
from bench.posthoc import averaging
from bench.posthoc.results import AVERAGED
from bench.posthoc.swad import Valley
from bench.spec import RunSpec, RuntimeOptions, make_spec


def _hook(tmp_path, config, steps=4):
    spec = SimpleNamespace(averaging=config, steps=steps)
    return averaging.Averaging(SimpleNamespace(spec=spec, directory=tmp_path), None)


def _feed(hook, values):
    """A one-weight model whose weight is ``values[t]`` after step t."""
    model = nn.Linear(1, 1, bias=False)
    for step, value in enumerate(values):
        with torch.no_grad():
            model.weight.fill_(value)
        hook.after_step(model, step)
    return float(hook.average.mean["weight"])


def test_swa_is_the_uniform_mean_of_the_iterates_from_its_start(tmp_path):
    hook = _hook(tmp_path, {"kind": "swa", "start_fraction": 0.5}, steps=4)
    assert _feed(hook, [0.0, 1.0, 2.0, 4.0]) == pytest.approx((2.0 + 4.0) / 2)
    assert hook.average.n == 2


def test_ema_follows_the_hand_computed_recursion(tmp_path):
    hook = _hook(tmp_path, {"kind": "ema", "decay": 0.75})
    # starts at the first iterate: 1; then 0.75 * 1 + 0.25 * 3 = 1.5; then 0.75 * 1.5 + 0.25 * 6
    assert _feed(hook, [1.0, 3.0, 6.0]) == pytest.approx(2.625)


LOSSES = [5, 4, 3, 2, 1.0, 1.1, 1.2, 1.05, 1.1, 1.3, 1.2, 2.0, 3, 4, 5, 6, 7]


def test_swad_window_on_a_synthetic_valley():
    """Hand-derived with n_converge 3, n_tolerance 6, ratio 0.3.

    Segment 6 is the first whose last three (4, 5, 6: 1.0, 1.1, 1.2) start at their minimum:
    the valley opens at 4, threshold 1.1 x 1.3 = 1.43. Of segments 1-4 the last above the
    threshold is 3, so nothing is added then. Each later segment i adds i - 5 while the
    minimum of segments i-5..i stays <= 1.43: 4 (at 9) ... 10 (at 15); at 16 the window
    11..16 has minimum 2.0 > 1.43: dead valley. Window: segments 4..10.
    """
    valley, added = Valley(3, 6, 0.3), []
    for loss in LOSSES:
        added += valley.update(loss)
    added += valley.finish()
    assert valley.converged_at == 4 and valley.threshold == pytest.approx(1.43)
    assert valley.dead and added == [4, 5, 6, 7, 8, 9, 10]


def test_swad_window_that_is_still_open_at_the_end():
    """Losses 3, 2, 1, 1.2, 1.3, 1.1, 1.2. Converged at segment 4 (its last three 1, 1.2, 1.3
    start at their minimum): valley at 2, threshold 7/6 x 1.3 = 1.5167. The code's slice
    adds the first four segments after the last above the threshold (1) but one: 3. Segments
    5 and 6 add nothing (the window's oldest, 0 and 1, precede the valley). At the end the
    window's tail 2..6 stays under the threshold: 2, 3, 4, 5, 6, so 3 counts twice."""
    valley, added = Valley(3, 6, 0.3), []
    for loss in [3, 2, 1, 1.2, 1.3, 1.1, 1.2]:
        added += valley.update(loss)
    assert added == [3] and valley.threshold == pytest.approx(1.3 * 3.5 / 3)
    assert valley.finish() == [2, 3, 4, 5, 6] and not valley.dead


def _options(tmp_path, name):
    return RuntimeOptions(output_dir=tmp_path / name, progress=False, threads=1)


def _raw(directory):
    return [
        {k: v for k, v in r.items() if k not in ("wall_s", "run_id", "spec")}
        for r in records.read_records(directory / records.RESULTS)
    ]


def _averaged(directory):
    return [
        {k: v for k, v in r.items() if k != "wall_s"}
        for r in records.read_records(directory / AVERAGED)
    ]


def test_averaging_is_part_of_the_identity():
    plain = make_spec("erm", "debug", size="tiny", steps=21, eval_every=10)
    swad = make_spec("erm", "debug", size="tiny", steps=21, eval_every=10, averaging="swad")
    assert "averaging" not in plain.to_dict() and swad.run_id != plain.run_id
    assert swad.averaging == {
        "kind": "swad",
        "n_converge": 3,
        "n_tolerance": 6,
        "tolerance_ratio": 0.3,
    }
    assert RunSpec.from_dict(swad.to_dict()) == swad
    assert dataclasses.replace(swad, averaging={}).run_id == plain.run_id


@pytest.mark.parametrize("kind", ["ema", "swad"])
def test_averaging_leaves_the_raw_model_alone(tmp_path, kind):
    plain = make_spec("erm", "debug", size="tiny", steps=21, eval_every=10)
    spec = make_spec("erm", "debug", size="tiny", steps=21, eval_every=10, averaging=kind)
    a = runner.run(plain, _options(tmp_path, "plain"))
    b = runner.run(spec, _options(tmp_path, kind))
    assert _raw(a.run_dir) == _raw(b.run_dir)
    found = _averaged(b.run_dir)
    assert [r["model"] for r in found] == [kind] * len(found)
    if kind == "ema":
        assert [r["step"] for r in found] == [0, 10, 20]
        assert found[-1]["eval"] != a.last_record["eval"]
    else:
        assert [r["step"] for r in found] == [20]
        assert found[0]["converged"] is False and found[0]["window"] == [11, 20]  # last segment


def test_swa_from_the_last_step_is_the_final_model(tmp_path):
    spec = make_spec(
        "erm",
        "debug",
        size="tiny",
        steps=21,
        eval_every=10,
        averaging={"kind": "swa", "start_fraction": 0.99},
    )
    outcome = runner.run(spec, _options(tmp_path, "swa"))
    (last,) = _averaged(outcome.run_dir)
    assert last["n_averaged"] == 1 and last["eval"] == outcome.last_record["eval"]


@pytest.mark.parametrize(
    "config",
    [{"kind": "ema", "decay": 0.9}, {"kind": "swad", "n_converge": 1, "n_tolerance": 2}],
)
def test_a_resumed_averaged_run_equals_an_uninterrupted_one(tmp_path, monkeypatch, config):
    spec = make_spec("erm", "debug", size="tiny", steps=41, eval_every=10, averaging=config)
    straight = runner.run(spec, _options(tmp_path, "straight"))
    original = averaging.Averaging.after_step

    def crash(self, algorithm, step):
        if step == 25:
            raise KeyboardInterrupt
        original(self, algorithm, step)

    monkeypatch.setattr(averaging.Averaging, "after_step", crash)
    with pytest.raises(KeyboardInterrupt):
        runner.run(spec, _options(tmp_path, "resumed"))
    monkeypatch.setattr(averaging.Averaging, "after_step", original)
    resumed = runner.run(spec, _options(tmp_path, "resumed"))
    assert _averaged(resumed.run_dir) == _averaged(straight.run_dir)
    assert _averaged(resumed.run_dir)[-1]["n_averaged"] > 2  # spans the crash
    assert _raw(resumed.run_dir) == _raw(straight.run_dir)


def test_bad_averaging_options_are_one_line_errors():
    with pytest.raises(UserError, match="unknown weight averaging"):
        make_spec("erm", "debug", size="tiny", averaging="polyak")
    with pytest.raises(UserError, match="decay"):
        make_spec("erm", "debug", size="tiny", averaging={"kind": "ema", "decay": 1.5})
    with pytest.raises(UserError, match="holdout > 0"):
        make_spec("erm", "debug", size="tiny", averaging="swad", holdout_fraction=0.0)


def test_swad_valley_dead_at_once_keeps_the_converging_segment(tmp_path, monkeypatch):
    """Losses 1, 2.7, 3, 9, 9, 9 with n 3/3 and ratio 0: the valley opens at segment 0
    (threshold 6.7 / 3 = 2.23) and dies at segment 3 (min of 2.7, 3, 9 > 2.23) before any
    segment is added; the code then returns its copy of the converging segment: step 0."""
    losses = iter([1.0, 2.7, 3.0, 9.0, 9.0, 9.0])
    monkeypatch.setattr(averaging, "validation_loss", lambda ctx: next(losses))
    config = {"kind": "swad", "n_converge": 3, "n_tolerance": 3, "tolerance_ratio": 0.0}
    spec = make_spec("erm", "debug", size="tiny", steps=51, eval_every=10, averaging=config)
    outcome = runner.run(spec, _options(tmp_path, "dead"))
    (final,) = _averaged(outcome.run_dir)
    assert final["dead_valley"] and final["converged"]
    assert final["window"] == [0, 0] and final["n_averaged"] == 1
