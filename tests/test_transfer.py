"""Transfer protocols: pretraining cache, recipes' freezing/copying, LP-FT, self-pretraining,
determinism, CLI."""

from __future__ import annotations

import json

import pytest
import torch

from bench import records, runner
from bench.algorithms import ALGORITHMS
from bench.cli import main
from bench.datasets.base import EnvData, Environment
from bench.errors import UserError
from bench.hparams import Fixed
from bench.seeding import torch_generator
from bench.spec import RuntimeOptions, make_spec, resolve_hparams
from bench.transfer.pretrain import PretrainSpec, pretrain_loss, pretrained_dir
from bench.transfer.tasks import TransferTask, register_task


@register_task("xfer_toy", shots=(5,))
class XferToy(TransferTask):
    """Vectors in 8-d; source labels: sign of x0; target labels: argmax of x[:3] (shares the first
    features)."""

    VERSION = 1
    ENVIRONMENTS = (Environment("target"), Environment("target_test"))
    TEST_ENVS = ("target_test",)
    INPUT_SHAPE = (8,)
    NUM_CLASSES = 3
    N_STEPS = 30
    EVAL_EVERY = 10
    SOURCE_ID = "xfer_toy"
    SOURCE_CLASSES = 2
    MODALITY = "vector"
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(16, ""),
        "mlp_depth": Fixed(3, ""),
        "batch_size": Fixed(32, ""),
        "pretrain_steps": Fixed(20, ""),
    }

    def _draw(self, part: str, n: int) -> torch.Tensor:
        return torch.randn(n, 8, generator=torch_generator("xfer_toy", self.data_seed, part))

    def build_target(self):
        x, t = self._draw("target", 120), self._draw("test", 60)
        return EnvData(x, x[:, :3].argmax(1)), EnvData(t, t[:, :3].argmax(1)), {}

    def build_source(self):
        x = self._draw("source", 200)
        return EnvData(x, (x[:, 0] > 0).long())


def _run(tmp_path, recipe, name="out", **overrides):
    steps = overrides.pop("steps", 30)
    spec = make_spec(recipe, "xfer_toy", overrides=overrides, steps=steps)
    out = runner.run(spec, RuntimeOptions(output_dir=tmp_path / name, progress=False, threads=1))
    assert out.status == "ok"
    info = records.read_json(out.run_dir / records.SPEC)
    state = torch.load(out.run_dir / records.CHECKPOINT, weights_only=False)["algorithm"]
    return info, state, out


def _pretrained(tmp_path, info, name="out"):
    return torch.load(
        pretrained_dir(tmp_path / name, info["transfer"]["pretrained"]) / "featurizer.pt",
        weights_only=True,
    )


def _numbers(run_dir):
    return [
        {k: v for k, v in r.items() if k != "wall_s"}
        for r in records.read_records(run_dir / records.RESULTS)
    ]


def test_pretraining_is_cached_once_and_recorded_in_every_run_spec(tmp_path):
    a, _, _ = _run(tmp_path, "finetune")
    weights = pretrained_dir(tmp_path / "out", a["transfer"]["pretrained"]) / "featurizer.pt"
    before = weights.stat().st_mtime_ns
    b, _, _ = _run(tmp_path, "linear_probe")
    assert a["transfer"]["pretrained"] == b["transfer"]["pretrained"]
    assert len(list((tmp_path / "out" / "pretrained").iterdir())) == 1
    assert weights.stat().st_mtime_ns == before, "a cache hit must not retrain"
    c, _, _ = _run(tmp_path, "finetune", pretrain_steps=21)
    assert c["transfer"]["pretrained"] != a["transfer"]["pretrained"], (
        "pretraining settings are part of the key"
    )
    assert a["transfer"]["pretrain"]["data"]["part"] == "source"


def test_cache_hit_and_miss_give_identical_runs(tmp_path):
    _run(tmp_path, "linear_probe", name="warm")  # fills the cache of "warm"
    _, _, hit = _run(tmp_path, "finetune", name="warm")
    _, _, miss = _run(tmp_path, "finetune", name="cold")
    assert _numbers(hit.run_dir) == _numbers(miss.run_dir)


def test_linear_probe_leaves_featurizer_unchanged_and_trains_head(tmp_path):
    info, state, _ = _run(tmp_path, "linear_probe")
    pre = _pretrained(tmp_path, info)
    for key, value in pre.items():
        assert torch.equal(state[f"featurizer.{key}"], value), key
    init = ALGORITHMS.get("linear_probe")(
        (8,), 3, 1, resolve_hparams(make_spec("linear_probe", "xfer_toy"))
    ).state_dict()
    assert not torch.equal(state["classifier.weight"], init["classifier.weight"])


@pytest.mark.parametrize("n", [1, 2])
def test_frozen_first_n_freezes_exactly_n_blocks(tmp_path, n):
    info, state, out = _run(tmp_path, "frozen_first_n", n=n)
    pre = _pretrained(tmp_path, info)
    layers = ["net.1", "net.3", "net.5"]  # the Linear of each MLP block
    assert (
        info["transfer"]["frozen_blocks"]
        == info["transfer"]["copied_blocks"]
        == [f"block{i + 1}" for i in range(n)]
    )
    for i, layer in enumerate(layers):
        same = torch.equal(state[f"featurizer.{layer}.weight"], pre[f"{layer}.weight"])
        assert same == (i < n), f"block{i + 1}: frozen copy expected {i < n}"
    last = records.read_records(out.run_dir / records.RESULTS)[-1]["train"]
    assert [last[f"diag/block{i + 1}/grad"] == 0 for i in range(3)] == [i < n for i in range(3)]


def test_reinit_above_n_copies_n_blocks_and_reinitialises_the_rest(tmp_path):
    info, _, _ = _run(tmp_path, "reinit_above_n", n=2, steps=1)  # fills the cache
    pre = _pretrained(tmp_path, info)
    spec = make_spec("reinit_above_n", "xfer_toy", overrides={"n": 2}, steps=1)
    alg = ALGORITHMS.get("reinit_above_n")((8,), 3, 1, resolve_hparams(spec))
    alg.prepare_run(runner.run_data(spec, RuntimeOptions(output_dir=tmp_path / "out")))
    got = alg.featurizer.state_dict()
    assert [
        torch.equal(got[f"{k}.weight"], pre[f"{k}.weight"]) for k in ("net.1", "net.3", "net.5")
    ] == [True, True, False]
    assert all(p.requires_grad for p in alg.parameters())


def test_lp_ft_starts_fine_tuning_from_the_probe(tmp_path):
    _, probe, _ = _run(tmp_path, "linear_probe", steps=10)
    info, lpft, _ = _run(tmp_path, "lp_ft", steps=10, probe_steps=10)
    for key in probe:
        if key.startswith(("featurizer.", "classifier.")):
            assert torch.equal(probe[key], lpft[key]), (
                f"after the probe phase lp_ft must equal a linear probe ({key})"
            )
    _, longer, _ = _run(tmp_path, "lp_ft", steps=20, probe_steps=10)
    pre = _pretrained(tmp_path, info)
    assert not torch.equal(longer["featurizer.net.1.weight"], pre["net.1.weight"]), (
        "fine-tuning moves the featurizer"
    )


def test_self_pretraining_uses_target_inputs_and_changes_the_featurizer(tmp_path):
    info, _, _ = _run(tmp_path, "self_pretrain")
    pspec = info["transfer"]["pretrain"]
    assert (pspec["objective"], pspec["data"]["part"], pspec["data"]["envs"]) == (
        "masked",
        "target",
        ["target"],
    )
    summary = records.read_json(
        pretrained_dir(tmp_path / "out", info["transfer"]["pretrained"]) / "spec.json"
    )
    assert summary["n_examples"] == 96, (
        "the target's training (in) split: 120 minus the 20% holdout"
    )
    pre = _pretrained(tmp_path, info)
    torch.manual_seed(0)
    from bench.networks import build_featurizer

    fresh = build_featurizer((8,), {**pspec["featurizer"]}).state_dict()
    assert not any(torch.equal(pre[k], fresh[k]) for k in pre)


def test_masked_token_loss_on_one_hot_dna_is_finite_and_learnable():
    x = (
        torch.nn.functional.one_hot(
            torch.randint(4, (16, 20), generator=torch.Generator().manual_seed(0)), 4
        )
        .permute(0, 2, 1)
        .float()
    )
    spec = PretrainSpec("masked", {}, {}, "sequence", 1, 1e-3, 16, 0.3, 0)
    feat = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(80, 32))
    head = torch.nn.Linear(32, 80)
    loss = pretrain_loss(
        spec, feat, head, x, torch.zeros(16, dtype=torch.long), torch.Generator().manual_seed(1)
    )
    assert torch.isfinite(loss) and 1.0 < loss.item() < 2.0, "about log(4) for an untrained decoder"


def test_few_shot_variant_keeps_k_per_class_nested():
    from bench.datasets import DATASETS

    small = DATASETS.get("xfer_toy_k5")(None, 0)
    full = DATASETS.get("xfer_toy")(None, 0)
    assert torch.bincount(small.envs["target"].y).tolist() == [5, 5, 5]
    rows = {tuple(r) for r in full.envs["target"].x.tolist()}
    assert all(tuple(r) in rows for r in small.envs["target"].x.tolist())
    assert torch.equal(small.envs["target_test"].x, full.envs["target_test"].x)


def test_bad_transfer_input_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="not a transfer task"):
        runner.run(
            make_spec("finetune", "debug", steps=2),
            RuntimeOptions(output_dir=tmp_path, progress=False),
        )
    with pytest.raises(UserError, match="n must lie in"):
        runner.run(
            make_spec("frozen_first_n", "xfer_toy", overrides={"n": 4}, steps=2),
            RuntimeOptions(output_dir=tmp_path, progress=False),
        )
    with pytest.raises(UserError, match="unknown block"):
        runner.run(
            make_spec("surgical", "xfer_toy", overrides={"block": "conv9"}, steps=2),
            RuntimeOptions(output_dir=tmp_path, progress=False),
        )


def test_cli_runs_a_transfer_task_with_a_recipe(tmp_path, capsys):
    argv = [
        "transfer",
        "--task",
        "xfer_toy",
        "--recipe",
        "frozen_first_n",
        "--hparams",
        '{"n": 2}',
        "--shots",
        "5",
        "--steps",
        "11",
        "--output-dir",
        str(tmp_path),
        "--no-progress",
        "--threads",
        "1",
    ]
    assert main(argv) == 0
    (run_dir,) = (tmp_path / "runs").iterdir()
    info = json.loads((run_dir / "spec.json").read_text())
    assert (
        info["spec"]["dataset"] == "xfer_toy_k5"
        and info["spec"]["algorithm"] == "frozen_first_n"
        and info["hparams"]["n"] == 2
    )
    assert "--task xfer_toy" in info["command"]
    assert (
        main(["transfer", "--task", "xfer_toy", "--recipe", "erm", "--output-dir", str(tmp_path)])
        == 2
    )
    assert "unknown recipe" in capsys.readouterr().err


def test_task_cut_from_a_dataset_pretrains_on_the_mixture_of_its_source_envs(tmp_path):
    from bench.datasets import DATASETS

    task = DATASETS.get("bottleneck_to_b_only")(None, 0, size="tiny")
    base = DATASETS.get("bottleneck_toy")(None, 0, size="tiny")
    assert len(task.build_source()) == sum(len(e) for e in base.envs.values())
    assert len(task.envs["target"]) + len(task.envs["target_test"]) == len(base.envs["b_only"])
    spec = make_spec(
        "linear_probe",
        "bottleneck_to_b_only",
        size="tiny",
        steps=2,
        overrides={"pretrain_steps": 2},
    )
    out = runner.run(spec, RuntimeOptions(output_dir=tmp_path, progress=False, threads=1))
    info = records.read_json(out.run_dir / records.SPEC)
    assert (
        info["transfer"]["pretrain"]["data"]["dataset"]
        == "bottleneck_toy:both+a_only+b_only+conflict"
    )


def test_transfer_views_label_variants_and_split_test_envs():
    from bench.selection import Run, select
    from bench.transfer.leaderboard import transfer_views

    def rec(step, target_out, test_in, ood_in):
        return {
            "step": step,
            "eval": {
                "target": {"in": {"acc": 1.0}, "out": {"acc": target_out}},
                "target_test": {"in": {"acc": test_in}, "out": {"acc": 0.0}},
                "ood": {"in": {"acc": ood_in}, "out": {"acc": 1.0}},
            },
        }

    spec = {
        "algorithm": "frozen_first_n",
        "dataset": "t",
        "test_envs": ["target_test", "ood"],
        "trial_seed": 0,
        "hparams_seed": 0,
        "overrides": {"n": 2},
    }
    run = Run("r1", spec, {"n": 2}, (rec(0, 0.9, 0.5, 0.4), rec(1, 0.8, 0.7, 0.6)), "ok")
    views = transfer_views([run, Run("r2", {**spec, "algorithm": "erm"}, {}, run.records, "ok")])
    assert [(v.spec["algorithm"], v.spec["test_envs"]) for v in views] == [
        ("frozen_first_n[n=2]", ["target_test"]),
        ("frozen_first_n[n=2]", ["ood"]),
    ]
    picked = {s.test_env: (s.acc, s.step) for s in select(views, "train_val")}
    assert picked == {"target_test": (0.5, 0), "ood": (0.4, 0)}, (
        "validation is the target's out split only, never the other test split"
    )
