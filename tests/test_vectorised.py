"""Vectorised group training (bench/vectorised.py): every file a run leaves equals one-by-one
training's, bit for bit, except wall-clock times."""

from __future__ import annotations

import csv
import dataclasses
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import cli, execution, launchers, plan, records, runner, vectorised
from bench.checkpoint import load_checkpoint
from bench.spec import RunSpec, RuntimeOptions, make_spec
from bench.vectorised import train as group_training
from bench.vectorised.data import GroupBatches, GroupEval
from bench.vectorised.products import Products
from bench.vectorised.train import _same_state


def _options(out: Path) -> RuntimeOptions:
    return RuntimeOptions(output_dir=out, progress=False, threads=1)


def _group(dataset: str, algorithm: str = "erm", **overrides) -> list[RunSpec]:
    """Three runs of one shape: two trials at one lr, one at another (and a weight decay)."""
    settings = [(0, 1e-3, 0.0), (1, 1e-3, 0.0), (0, 3e-3, 1e-4)]
    return [
        make_spec(
            algorithm,
            dataset,
            size="tiny",
            steps=9,
            eval_every=4,
            trial_seed=trial,
            overrides={"lr": lr, "weight_decay": wd, **overrides},
        )
        for trial, lr, wd in settings
    ]


def _records(out: Path, spec: RunSpec) -> list[dict]:
    found = records.read_records(records.run_dir(out, spec.run_id) / records.RESULTS)
    return [{k: v for k, v in r.items() if k != "wall_s"} for r in found]


def _assert_identical(one: Path, grouped: Path, specs: list[RunSpec]) -> None:
    """Records (all but wall_s), checkpoint (weights, Adam state, RNG) and status equal."""
    for spec in specs:
        assert _records(grouped, spec) == _records(one, spec) != []
        a, b = (records.run_dir(o, spec.run_id) for o in (one, grouped))
        ca, cb = (_checkpoint(d) for d in (a, b))
        assert _same_state(ca, cb)
        assert records.read_json(a / records.DONE)["status"] == "ok"
        assert records.read_json(b / records.DONE)["step"] == spec.steps - 1
        assert sorted(p.name for p in a.iterdir()) == sorted(p.name for p in b.iterdir())


def _checkpoint(directory: Path) -> dict:
    """The checkpoint but its wall time and Python ``random`` state: the first run in a process
    finds the latter advanced by something imported lazily (one-by-one training does too);
    nothing in training draws from it."""
    state = load_checkpoint(directory / records.CHECKPOINT)
    state["rng"].pop("python")
    return {**state, "wall_s": 0}


@pytest.fixture
def steps_taken(monkeypatch) -> list[int]:
    """Members of every batched step (so a silent fall-back cannot pass the identity tests)."""
    calls: list[int] = []
    real = vectorised.BatchedERM.step

    def counting(self, x, y, sizes):
        calls.append(len(y))
        return real(self, x, y, sizes)

    monkeypatch.setattr(vectorised.BatchedERM, "step", counting)
    return calls


@pytest.mark.parametrize(
    "overrides",
    [{}, {"batch_size": 0}, {"init": "xavier"}],
    ids=["minibatches", "full-batch", "xavier-init"],
)
def test_a_group_trains_exactly_as_one_by_one(tmp_path, overrides, steps_taken, caplog):
    specs = _group("fish_toy", **overrides)
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    outcomes = vectorised.run_group(specs, _options(tmp_path / "group"))
    assert [o.status for o in outcomes] == ["ok"] * 3
    assert steps_taken.count(3) >= specs[0].steps  # the probe's step and every training step
    assert "one by one" not in caplog.text
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


# Each batched family beside ERM: V-REx's penalty switches on at step 3 of 9, with DomainBed's
# schedule (Adam re-created then) or the IRM code's (loss divided by the weight); GroupDRO
# carries its group weights q from step to step.
FAMILIES = [
    pytest.param("vrex", "fish_toy", {"vrex_penalty_anneal_iters": 3}, id="vrex"),
    pytest.param(
        "vrex",
        "fish_toy",
        {"vrex_penalty_anneal_iters": 3, "irm_code": True, "vrex_lambda": 100.0},
        id="vrex-irm-code",
    ),
    pytest.param(
        "vrex",
        "irm_sem",  # two training environments
        {"vrex_penalty_anneal_iters": 3, "vrex_penalty": "squared_difference"},
        id="vrex-squared-difference",
    ),
    pytest.param("irm", "fish_toy", {"irm_penalty_anneal_iters": 3}, id="irm"),
    pytest.param(
        "irm",
        "fish_toy",
        {"irm_penalty_anneal_iters": 3, "irm_code": True, "irm_lambda": 100.0},
        id="irm-irm-code",
    ),
    pytest.param(
        "irm", "fish_toy", {"irm_penalty_anneal_iters": 3, "batch_size": 0}, id="irm-full-batch"
    ),
    pytest.param("fishr", "fish_toy", {"penalty_anneal_iters": 3}, id="fishr"),
    pytest.param(
        "fishr",
        "fish_toy",
        {"penalty_anneal_iters": 3, "irm_code": True, "ema": 0.0, "batch_size": 0},
        id="fishr-irm-code-full-batch",
    ),
    pytest.param("ib_erm", "fish_toy", {"ib_penalty_anneal_iters": 3}, id="ib_erm"),
    pytest.param("coral", "fish_toy", {}, id="coral"),
    pytest.param("mmd", "fish_toy", {}, id="mmd"),
    pytest.param("coral", "irm_sem", {"batch_size": 0}, id="coral-full-batch-two-envs"),
    pytest.param("group_dro", "fish_toy", {}, id="group_dro"),
    pytest.param("group_dro", "fish_toy", {"batch_size": 0}, id="group_dro-full-batch"),
    # one logit (binary cross-entropy), full batch, a one-layer MLP of width 16
    pytest.param("erm", "spurious_toy", {}, id="erm-one-logit"),
    pytest.param("vrex", "spurious_toy", {"vrex_penalty_anneal_iters": 3}, id="vrex-one-logit"),
    pytest.param("group_dro", "spurious_toy", {}, id="group_dro-one-logit"),
    pytest.param("irm", "spurious_toy", {"irm_penalty_anneal_iters": 3}, id="irm-one-logit"),
    pytest.param("fishr", "spurious_toy", {"penalty_anneal_iters": 3}, id="fishr-one-logit"),
    pytest.param("coral", "spurious_toy", {}, id="coral-one-logit"),
    pytest.param("sd", "fish_toy", {}, id="sd"),
    pytest.param("sd", "spurious_toy", {}, id="sd-one-logit"),
]


@pytest.mark.parametrize("algorithm, dataset, overrides", FAMILIES)
def test_each_batched_family_trains_exactly_as_one_by_one(
    tmp_path, algorithm, dataset, overrides, steps_taken, caplog
):
    specs = _group(dataset, algorithm, **overrides)
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert steps_taken.count(3) >= specs[0].steps
    assert "one by one" not in caplog.text
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


def _one_group_trains_as_one_by_one(
    tmp_path: Path, algorithm: str, members: list[dict], steps_taken
) -> None:
    """Runs of ``algorithm`` on fish_toy, member i with trial seed i and its own ``members[i]``
    hparams, form one group, which takes every step batched and leaves one-by-one training's
    files."""
    specs = [
        make_spec(
            algorithm,
            "fish_toy",
            size="tiny",
            steps=9,
            eval_every=4,
            trial_seed=trial,
            overrides=overrides,
        )
        for trial, overrides in enumerate(members)
    ]
    assert len(vectorised.units(specs)) == 1
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert steps_taken.count(len(specs)) >= specs[0].steps
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


@pytest.mark.parametrize(
    "algorithm, weight_key, anneal_key",
    [
        ("vrex", "vrex_lambda", "vrex_penalty_anneal_iters"),
        ("irm", "irm_lambda", "irm_penalty_anneal_iters"),
        ("fishr", "lambda", "penalty_anneal_iters"),
    ],
)
@pytest.mark.parametrize("irm_code", [False, True])
def test_penalty_members_with_their_own_weight_and_anneal_step_train_as_one_by_one(
    tmp_path, algorithm, weight_key, anneal_key, irm_code, steps_taken
):
    """Each member switches its own penalty weight on at its own step (and, with DomainBed's
    schedule, restarts its own Adam there) inside one group."""
    members = [
        {weight_key: weight, anneal_key: anneal, "irm_code": irm_code, "lr": lr}
        for weight, anneal, lr in [(10.0, 2, 1e-3), (100.0, 3, 2e-3), (0.5, 5, 1e-3)]
    ]
    _one_group_trains_as_one_by_one(tmp_path, algorithm, members, steps_taken)


@pytest.mark.parametrize(
    "algorithm, members",
    [
        # Fishr's moving average, 0 (none: the state untouched) included
        (
            "fishr",
            [
                {"ema": 0.0, "lambda": 10.0, "penalty_anneal_iters": 2},
                {"ema": 0.9103413810761215, "lambda": 100.0, "penalty_anneal_iters": 2},
                {"ema": 0.95, "lambda": 1e3, "penalty_anneal_iters": 2},
            ],
        ),
        ("coral", [{"mmd_gamma": gamma} for gamma in (0.1, 1.0, 7.3)]),
        (  # its own weight from its own step, Adam re-created there
            "ib_erm",
            [
                {"ib_lambda": weight, "ib_penalty_anneal_iters": anneal}
                for weight, anneal in [(10.0, 2), (100.0, 3), (0.5, 5)]
            ],
        ),
        ("group_dro", [{"groupdro_eta": eta} for eta in (1e-3, 1e-2, 1e-1)]),
        ("sd", [{"sd_reg": weight} for weight in (1e-5, 3.7e-3, 0.1)]),
    ],
    ids=["fishr-ema", "coral-gamma", "ib_erm-weight-and-anneal", "group_dro-eta", "sd-weight"],
)
def test_members_with_their_own_hparams_train_as_one_by_one(
    tmp_path, algorithm, members, steps_taken
):
    _one_group_trains_as_one_by_one(tmp_path, algorithm, members, steps_taken)


def test_a_group_of_sixteen_trains_exactly_as_one_by_one(tmp_path, steps_taken):
    """A full unit (MAX_GROUP members): 4 trials x 4 lr/weight-decay settings."""
    specs = [
        make_spec(
            "erm",
            "bottleneck_toy",
            size="tiny",
            steps=5,
            eval_every=2,
            trial_seed=trial,
            overrides={"lr": lr, "weight_decay": wd},
        )
        for trial in range(4)
        for lr, wd in [(1e-3, 0.0), (3e-3, 1e-4), (1e-2, 1e-3), (3e-4, 3e-2)]
    ]
    assert len(specs) == vectorised.MAX_GROUP
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert steps_taken.count(16) == specs[0].steps + 1
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


def test_specs_of_another_shape_or_algorithm_train_alone():
    specs = _group("fish_toy")
    other = [
        make_spec("erm", "fish_toy", size="tiny", overrides={"mlp_dropout": 0.1}),
        make_spec("erm", "fish_toy", size="tiny", overrides={"batch_size": 16}),
        make_spec("erm", "fish_toy", size="tiny", overrides={"l2": 1e-3}),
        make_spec("erm", "fish_toy", size="tiny", precision="bf16"),
        make_spec("erm", "spurious_toy", size="tiny"),  # another dataset: a group of its own
        make_spec("mixup", "fish_toy", size="tiny"),
    ]
    for spec in (other[0], other[2], other[3], other[5]):
        assert vectorised.group_key(spec) is None
    work = vectorised.units(specs + other)
    assert sorted(map(len, work)) == [1, 1, 1, 1, 1, 1, 3]


def test_groups_are_cut_to_give_every_worker_a_unit():
    specs = [make_spec("erm", "fish_toy", size="tiny", trial_seed=t) for t in range(20)]
    assert sorted(map(len, vectorised.units(specs))) == [10, 10]  # at most MAX_GROUP
    assert sorted(map(len, vectorised.units(specs, workers=4))) == [5, 5, 5, 5]


def test_the_dry_run_names_each_group_and_the_runs_trained_alone():
    specs = _group("fish_toy") + [make_spec("irm", "fish_toy", size="tiny")]
    lines = vectorised.describe_units(vectorised.units(specs))
    assert lines[0] == "vectorised: 3 run(s) in 1 group(s); 1 run(s) one by one"
    assert lines[1:] == [
        "  3 runs of erm on fish_toy (test test): trials [0, 1], hparams seeds [0]"
    ]


def test_a_group_resumes_after_a_kill_with_identical_records(tmp_path, monkeypatch):
    specs = _group("fish_toy")
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    real = group_training._write

    def killed_at_step_4(ctx, record, checkpoint):
        found = real(ctx, record, checkpoint)
        if record["step"] == 4:
            raise KeyboardInterrupt  # after the checkpoint of step 4: the worker dies
        return found

    monkeypatch.setattr(group_training, "_write", killed_at_step_4)
    with pytest.raises(KeyboardInterrupt):
        vectorised.run_group(specs, _options(tmp_path / "group"))
    monkeypatch.setattr(group_training, "_write", real)
    vectorised.run_group(specs, _options(tmp_path / "group"))  # partial runs: one by one
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


def test_a_group_writes_while_it_trains_each_run_s_files_in_order(tmp_path, monkeypatch):
    """Records and checkpoints go to disk in threads while the group steps on; each run's writes
    still follow one another, step after step, and end before its done file is written."""
    specs = _group("fish_toy")
    events: list[tuple[str, str, int, float, float]] = []  # (what, run, step, start, end)
    write, step, finish = (
        group_training._write,
        vectorised.BatchedERM.step,
        runner.RunContext.finish,
    )

    def slow_write(ctx, record, checkpoint):
        start = time.perf_counter()
        time.sleep(0.05)  # a slow disk
        found = write(ctx, record, checkpoint)
        events.append(("write", ctx.spec.run_id, record["step"], start, time.perf_counter()))
        return found

    def timed_step(self, x, y, sizes):
        start = time.perf_counter()
        out = step(self, x, y, sizes)
        events.append(("step", "", self.updates - 1, start, time.perf_counter()))
        return out

    def timed_finish(self, *args):
        events.append(("finish", self.spec.run_id, -1, time.perf_counter(), 0.0))
        return finish(self, *args)

    monkeypatch.setattr(group_training, "_write", slow_write)
    monkeypatch.setattr(vectorised.BatchedERM, "step", timed_step)
    monkeypatch.setattr(runner.RunContext, "finish", timed_finish)
    vectorised.run_group(specs, _options(tmp_path))
    writes = [e for e in events if e[0] == "write"]
    steps = [e for e in events if e[0] == "step"]
    assert any(w[3] < s[3] < w[4] for w in writes for s in steps)  # steps ran during writes
    for spec in specs:
        own = sorted((w for w in writes if w[1] == spec.run_id), key=lambda w: w[2])
        assert [w[2] for w in own] == spec.record_steps
        assert all(earlier[4] <= later[3] for earlier, later in zip(own, own[1:]))
        (done,) = [e[3] for e in events if e[0] == "finish" and e[1] == spec.run_id]
        assert own[-1][4] <= done
    one = tmp_path / "one"
    for spec in specs:
        runner.run(spec, _options(one))
    _assert_identical(one, tmp_path, specs)


def test_the_local_launcher_trains_groups_and_single_runs(tmp_path, steps_taken):
    alone = make_spec("irm", "fish_toy", size="tiny", steps=9, eval_every=4)
    specs = _group("fish_toy") + [alone]
    list(launchers.local(specs, _options(tmp_path / "one"), jobs=1))
    finished = list(launchers.local(specs, _options(tmp_path / "group"), jobs=1, vectorise=True))
    assert sorted(f.run_id for f in finished) == sorted(s.run_id for s in specs)
    assert steps_taken and all(n == 3 for n in steps_taken)
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)
    for spec in specs:
        assert len(launchers.trained_log(records.run_dir(tmp_path / "group", spec.run_id))) == 1


@pytest.mark.parametrize("rounds_differently", [False, True])
@pytest.mark.parametrize(
    "algorithm, overrides",
    [
        ("irm", {"irm_penalty_anneal_iters": 3}),
        ("fishr", {"penalty_anneal_iters": 3}),
        ("coral", {}),
        ("sd", {}),
    ],
)
def test_a_penalty_s_gradient_takes_the_group_s_way_only_where_it_equals_each_member_s(
    tmp_path, monkeypatch, steps_taken, algorithm, overrides, rounds_differently
):
    """IRM's and Fishr's penalties differentiate a gradient: the group's way (one autograd graph,
    ``vmap``, or SD's gradient written out) is used after probes showed it equal to one graph
    per member; where a probe differs (here by one ulp), the members' way."""
    batched = vectorised.BATCHED[algorithm]
    specs = _group("fish_toy", algorithm, **overrides)
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    taken, real = [], batched._group_grads

    def group_grads(self, first, *args):
        taken.append(first is self._features or first is getattr(self, "_logits", None))
        grad, *stats = real(self, first, *args)
        return (grad * (1 + torch.finfo(torch.float32).eps) if rounds_differently else grad), *stats

    monkeypatch.setattr(batched, "_group_grads", group_grads)
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert steps_taken.count(3) >= specs[0].steps
    assert any(taken) != rounds_differently  # a training step took the group's way only if equal
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


def test_a_group_s_minibatches_are_each_member_s_own_across_chunks_and_epochs(tmp_path):
    """``GroupBatches`` finds the rows of 32 steps at a time from each member's stream of
    epoch orders; over 70 steps (three chunks, batches running past epochs' ends) every
    member's inputs and labels are its own ``RunContext.minibatches``, in order."""
    specs = [make_spec("erm", "fish_toy", size="tiny", steps=70, trial_seed=t) for t in (0, 1)]
    contexts = [
        runner.prepare(s, _options(tmp_path), tmp_path / str(i)) for i, s in enumerate(specs)
    ]
    batches = GroupBatches(contexts)
    for step in range(70):
        x, y, sizes = batches(step)
        for i, ctx in enumerate(contexts):
            own = ctx.minibatches(step)
            assert sizes == [len(labels) for _, labels in own]
            assert torch.equal(x[i], torch.cat([inputs for inputs, _ in own]))
            assert torch.equal(y[i], torch.cat([labels for _, labels in own]))


def _sites_of_unequal_sizes(path: Path) -> str:
    """A CSV dataset of three sites with 40, 30 and 50 rows: its full batches differ in size."""
    gen = np.random.default_rng(0)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["site", "y", "a", "b"])
        for site, rows, shift in (("north", 40, 0.0), ("south", 30, 1.0), ("west", 50, 2.0)):
            for _ in range(rows):
                y = int(gen.integers(2))
                writer.writerow([site, y, y + shift + gen.normal(0, 0.5), gen.normal()])
    return f"csv:{path}?env=site&label=y"


@pytest.mark.parametrize(
    "algorithm, overrides",
    [("erm", {}), ("vrex", {"vrex_penalty_anneal_iters": 3}), ("group_dro", {})],
)
def test_full_batch_environments_of_unequal_sizes_train_exactly_as_one_by_one(
    tmp_path, monkeypatch, steps_taken, algorithm, overrides
):
    """Environments of equal rows are batched as N x k blocks (losses, ``grad_cos``); these
    take the per-environment way."""
    dataset = _sites_of_unequal_sizes(tmp_path / f"sites_{algorithm}.csv")  # a name per test
    specs = _group(dataset, algorithm, batch_size=0)
    specs = [dataclasses.replace(s, overrides={**s.overrides, **overrides}) for s in specs]
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    seen, real = [], vectorised.BatchedERM._own_rows

    def own_rows(self, grad, features, sizes):
        seen.append(tuple(sizes))
        return real(self, grad, features, sizes)

    monkeypatch.setattr(vectorised.BatchedERM, "_own_rows", own_rows)
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert steps_taken.count(3) >= specs[0].steps
    assert seen and all(len(set(sizes)) > 1 for sizes in seen)
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


@pytest.mark.parametrize("rounds_differently", [False, True])
def test_grad_cos_takes_each_environment_s_own_rows_only_where_that_equals_zero_padding(
    tmp_path, monkeypatch, rounds_differently
):
    """One run forms an environment's head gradient from all rows, the others' zero; the group
    from the environment's own rows (a third of the products) after probes showed the two
    equal. Where a probe differs (here by one ulp), the zero-padded way."""
    specs = _group("fish_toy")
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    batched, probing, taken = vectorised.BatchedERM, [], []
    real, real_probe = batched._own_rows, batched._own_rows_probe

    def own_rows(self, grad, features, sizes):
        taken.append(not probing)
        biases, weights = real(self, grad, features, sizes)
        one_ulp = 1 + torch.finfo(torch.float32).eps
        return (biases * one_ulp if rounds_differently else biases), weights

    def probe(self, *args):
        probing.append(True)
        try:
            return real_probe(self, *args)
        finally:
            probing.pop()

    monkeypatch.setattr(batched, "_own_rows", own_rows)
    monkeypatch.setattr(batched, "_own_rows_probe", probe)
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert any(taken) != rounds_differently  # a training step took its own rows only if equal
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


def test_a_group_trains_with_freed_memory_kept_as_one_run_does(tmp_path, monkeypatch):
    """Without it, glibc maps and faults in every freed activation again (a group's are larger
    than one run's): relu and its backward took 10x their time on a 10-member group."""
    if execution._glibc() is None:
        pytest.skip("the allocator setting applies to glibc only")
    kept: list[int] = []
    real = vectorised.BatchedERM.step

    def noting(self, x, y, sizes):
        kept.append(execution._kept)
        return real(self, x, y, sizes)

    monkeypatch.setattr(vectorised.BatchedERM, "step", noting)
    vectorised.run_group(_group("fish_toy"), _options(tmp_path))
    assert kept and min(kept) > 0
    assert execution._kept == 0  # and the heap is trimmed after


def test_a_group_whose_batched_step_differs_falls_back(tmp_path, monkeypatch, caplog):
    """The first-step probe guards machines whose batched kernels round differently."""
    specs = _group("fish_toy")
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    real = vectorised.BatchedERM._forward

    def rounded_differently(self, x, trace=None):
        return real(self, x, trace) * (1 + torch.finfo(torch.float32).eps)

    monkeypatch.setattr(vectorised.BatchedERM, "_forward", rounded_differently)
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert "training them one by one" in caplog.text
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


def test_a_group_whose_batched_evaluation_differs_evaluates_one_by_one(
    tmp_path, monkeypatch, caplog, steps_taken
):
    """The first evaluation is checked against each member's own: on a difference the group
    keeps training together but evaluates one member at a time."""
    specs = _group("fish_toy")
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    real = GroupEval._split

    def miscounted(self, idx):
        found = real(self, idx)
        return [{**found[0], "acc": -1.0}] + found[1:]

    monkeypatch.setattr(GroupEval, "_split", miscounted)
    vectorised.run_group(specs, _options(tmp_path / "group"))
    assert "evaluating them one by one" in caplog.text
    assert steps_taken.count(3) >= specs[0].steps
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


CLI_SWEEP = [
    "sweep",
    "--algorithms",
    "erm,mixup",
    "--datasets",
    "fish_toy",
    "--size",
    "tiny",
    "--steps",
    "9",
    "--n-trials",
    "3",
    "--jobs",
    "1",
    "--no-progress",
]


def test_the_dry_run_lists_the_groups_and_times_them_as_groups(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(plan, "_FAILED", {})
    alone = {"step_s": 0.001, "eval_s": 0.01, "setup_s": 0.1, "load": 0.5}
    monkeypatch.setattr(plan, "_calibrate", lambda spec, options, steps_only=False: alone)
    timed = []

    def time_group(specs, options, steps):
        timed.append(len(specs))
        return {"setup_s": 0.05, "step_s": 0.0005, "eval_s": 0.002, "record_s": 0.001}

    monkeypatch.setattr(vectorised, "time_group", time_group)
    out = tmp_path / "out"
    assert cli.main([*CLI_SWEEP, "--vectorise", "--dry-run", "--output-dir", str(out)]) == 0
    text = capsys.readouterr().out
    assert "vectorised: 3 run(s) in 1 group(s); 3 run(s) one by one" in text
    assert "  3 runs of erm on fish_toy (test test): trials [0, 1, 2], hparams seeds [0]" in text
    spec = make_spec("irm", "fish_toy", size="tiny", steps=9)
    records_ = len(spec.record_steps)
    one = 0.1 + 9 * 0.001 + records_ * 0.01  # a mixup run, one by one
    group = 0.05 + 9 * 0.0005 + records_ * (0.002 + 3 * 0.001)  # the erm group
    assert f"estimate: {plan.format_duration(3 * one + group)} for 6 run(s), 1 job(s)" in text
    assert "groups vectorised" in text
    assert timed == [3] and not (out / "runs").exists()
    assert cli.main([*CLI_SWEEP, "--vectorise", "--dry-run", "--output-dir", str(out)]) == 0
    assert timed == [3]  # cached per protocol and group size
    capsys.readouterr()
    # two workers: each starts (10 s here), then takes the next unit when free (the three
    # mixup runs, then the group, go to the first free worker)
    monkeypatch.setattr(plan, "worker_start_s", lambda measure: 10.0)
    two = [*CLI_SWEEP[:-3], "--jobs", "2", "--no-progress"]
    assert cli.main([*two, "--vectorise", "--dry-run", "--output-dir", str(out)]) == 0
    finish = 10.0 + max(2 * one, one + group)
    text = capsys.readouterr().out
    assert f"estimate: {plan.format_duration(finish)} for 6 run(s), 2 job(s)" in text


def test_a_group_is_timed_on_throw_away_copies(tmp_path):
    specs = _group("fish_toy")
    found = vectorised.time_group(specs, _options(tmp_path / "out"), steps=2)
    assert min(found[k] for k in ("setup_s", "step_s", "eval_s", "record_s")) > 0
    assert not (tmp_path / "out").exists()
    alone = vectorised.time_group(_group("fish_toy", "mixup"), _options(tmp_path), steps=2)
    assert alone == {"alone": True}


def test_a_group_s_step_is_timed_without_the_loss_s_probes(tmp_path, monkeypatch):
    """Where a member's penalty weight switches on, the loss's group way is probed again: a few
    times in a run, but most of a few timed steps (it put a plan at 2.4x the measured time)."""
    from bench.vectorised.irm import BatchedIRM

    real = BatchedIRM._probe

    def slow_probe(self, *args):
        time.sleep(0.05)
        return real(self, *args)

    monkeypatch.setattr(BatchedIRM, "_probe", slow_probe)
    specs = [  # one member switches at each timed step: a new key, probed, every step
        make_spec(
            "irm", "fish_toy", size="tiny", trial_seed=0, overrides={"irm_penalty_anneal_iters": t}
        )
        for t in (1, 2, 3)
    ]
    found = vectorised.time_group(specs, _options(tmp_path / "out"), steps=2)
    assert 0 < found["step_s"] < 0.05  # 3 probes of 0.05 s at each of the 2 timed steps, left out


def test_a_vectorised_sweep_writes_the_records_of_a_sweep_one_by_one(tmp_path, steps_taken):
    assert cli.main([*CLI_SWEEP, "--output-dir", str(tmp_path / "one")]) == 0
    assert not steps_taken
    assert cli.main([*CLI_SWEEP, "--vectorise", "--output-dir", str(tmp_path / "group")]) == 0
    assert steps_taken and set(steps_taken) == {3}
    specs = [
        make_spec(algorithm, "fish_toy", size="tiny", steps=9, trial_seed=trial)
        for algorithm in ("erm", "mixup")
        for trial in range(3)
    ]
    _assert_identical(tmp_path / "one", tmp_path / "group", specs)


@pytest.mark.parametrize("diverges_at, kept", [(5, [0, 4]), (4, [0]), (8, [0, 4])])
def test_a_member_that_diverges_stops_and_the_others_train_on(
    tmp_path, monkeypatch, diverges_at, kept
):
    """As ``runner.train_loop``: non-finite statistics end that run as ``diverged`` at that step
    (no record of it), between records or at one; the rest of the group is unaffected."""
    specs = _group("fish_toy")  # records at steps 0, 4 and 8
    for spec in specs:
        runner.run(spec, _options(tmp_path / "one"))
    real = vectorised.BatchedERM.step
    calls = []

    def second_member_diverges(self, x, y, sizes):
        stats = real(self, x, y, sizes)
        calls.append(None)
        if len(calls) == diverges_at + 2:  # the probe's step, then training steps 0, 1, ...
            stats[1, 0] = float("nan")
        return stats

    monkeypatch.setattr(vectorised.BatchedERM, "step", second_member_diverges)
    outcomes = vectorised.run_group(specs, _options(tmp_path / "group"))
    assert [o.status for o in outcomes] == ["ok", "diverged", "ok"]
    diverged = records.run_dir(tmp_path / "group", specs[1].run_id)
    assert records.read_json(diverged / records.DONE)["step"] == diverges_at
    assert [r["step"] for r in _records(tmp_path / "group", specs[1])] == kept
    assert (
        _records(tmp_path / "group", specs[1]) == _records(tmp_path / "one", specs[1])[: len(kept)]
    )
    _assert_identical(tmp_path / "one", tmp_path / "group", [specs[0], specs[2]])


def test_a_group_whose_members_all_diverge_stops_at_the_next_record(tmp_path, monkeypatch):
    """No step is taken past the record step where every member is found diverged."""
    specs = _group("fish_toy")
    real = vectorised.BatchedERM.step
    calls = []

    def all_diverge_at_step_1(self, x, y, sizes):
        stats = real(self, x, y, sizes)
        calls.append(None)
        if len(calls) >= 3:  # the probe's step, step 0, then step 1 on
            stats[:, 0] = float("nan")
        return stats

    monkeypatch.setattr(vectorised.BatchedERM, "step", all_diverge_at_step_1)
    outcomes = vectorised.run_group(specs, _options(tmp_path / "group"))
    assert [o.status for o in outcomes] == ["diverged"] * 3
    assert len(calls) == 1 + 5  # steps 0..4: found at step 4's record, none after
    for spec in specs:
        done = records.read_json(records.run_dir(tmp_path / "group", spec.run_id) / records.DONE)
        assert done["step"] == 1


def test_products_equal_each_run_s_own_also_where_bmm_rounds_differently():
    """Shapes where MKL's batched kernel rounds differently from its single one (on the AMD
    EPYC this was measured on: a 5x16 @ 16x5 product, a one-column head) fall back to
    member-by-member products; the test holds whichever kernels a CPU picks."""
    products = Products()
    a, b = torch.randn(12, 5, 16), torch.randn(12, 16, 5)
    found = products.mm(a, b)
    assert all(torch.equal(found[i], a[i].clone().mm(b[i].clone())) for i in range(12))
    h, w, c = torch.randn(12, 192, 6), torch.randn(12, 1, 6), torch.randn(12, 1)
    out = products.addmm(c, h, w.transpose(1, 2))
    expected = [torch.addmm(c[i].clone(), h[i].clone(), w[i].clone().t()) for i in range(12)]
    assert all(torch.equal(out[i], expected[i]) for i in range(12))
