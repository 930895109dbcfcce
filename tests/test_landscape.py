"""Loss landscapes of transfer runs: filter-normalised directions, a line that joins the runs'
real start and final weights, and runs of different tasks refused."""

from __future__ import annotations

import shutil

import pytest
import torch

from bench import records, runner
from bench.algorithms.base import classification_loss
from bench.datasets.base import EnvData, Environment
from bench.errors import UserError
from bench.hparams import Fixed
from bench.landscape import LINE, filter_normalised
from bench.posthoc.trained import build_algorithm, load_trained
from bench.seeding import torch_generator
from bench.spec import RuntimeOptions, make_spec
from bench.transfer.landscape import compare
from bench.transfer.landscape_cli import main
from bench.transfer.pretrain import WEIGHTS, pretrained_dir
from bench.transfer.tasks import TransferTask, register_task


class _LandscapeToy(TransferTask):
    """8-d vectors; source labels: sign of x0; target labels: argmax of x[:3]."""

    VERSION = 1
    ENVIRONMENTS = (Environment("target"), Environment("target_test"))
    TEST_ENVS = ("target_test",)
    INPUT_SHAPE = (8,)
    NUM_CLASSES = 3
    N_STEPS = 30
    EVAL_EVERY = 10
    SOURCE_CLASSES = 2
    MODALITY = "vector"
    HPARAM_OVERRIDES = {
        "mlp_width": Fixed(16, ""),
        "mlp_depth": Fixed(3, ""),
        "batch_size": Fixed(32, ""),
        "pretrain_steps": Fixed(20, ""),
    }

    def _draw(self, part: str, n: int) -> torch.Tensor:
        return torch.randn(n, 8, generator=torch_generator(self.NAME, self.data_seed, part))

    def build_target(self):
        x, t = self._draw("target", 120), self._draw("test", 60)
        return EnvData(x, x[:, :3].argmax(1)), EnvData(t, t[:, :3].argmax(1)), {}

    def build_source(self):
        x = self._draw("source", 200)
        return EnvData(x, (x[:, 0] > 0).long())


@register_task("landscape_toy_a")
class ToyA(_LandscapeToy):
    SOURCE_ID = "landscape_toy_a"


@register_task("landscape_toy_b")
class ToyB(_LandscapeToy):
    SOURCE_ID = "landscape_toy_b"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Finished runs in one output directory: scratch and finetune on A, scratch on B."""
    out = tmp_path_factory.mktemp("landscape")
    options = RuntimeOptions(output_dir=out, progress=False, threads=1)
    torch.set_num_threads(1)
    done = {}
    for recipe, task in (("scratch", "a"), ("finetune", "a"), ("scratch", "b")):
        outcome = runner.run(make_spec(recipe, f"landscape_toy_{task}"), options)
        assert outcome.status == "ok"
        done[f"{recipe}_{task}"] = outcome.run_dir
    return done


def test_directions_have_the_weights_filter_norms_and_spare_biases():
    weights = [torch.randn(4, 3), torch.randn(6, 2, 3, 3), torch.randn(4)]
    d = filter_normalised(weights, torch.Generator().manual_seed(0))
    assert torch.allclose(d[0].norm(dim=1), weights[0].norm(dim=1))
    assert torch.allclose(d[1].flatten(1).norm(dim=1), weights[1].flatten(1).norm(dim=1))
    assert torch.equal(d[2], torch.zeros(4))
    assert not torch.allclose(d[0], weights[0])


def _train_loss(model, run) -> float:
    x, y = run.envs["target"].batch(run.splits["target"]["in"])
    with torch.no_grad():
        return float(classification_loss(model.eval().predict(x), y))


@pytest.mark.slow  # trains for several seconds; the fast subset leaves it out
def test_the_line_joins_each_runs_start_and_final_weights(runs, tmp_path):
    """alpha = 0 is the run's start (its seeded init; for finetune, with the cached pretrained
    featurizer loaded here independently) and alpha = 1 its checkpoint."""
    found = compare([runs["scratch_a"], runs["finetune_a"]], tmp_path / "l.png")["runs"]
    assert (tmp_path / "l.png").exists() and (tmp_path / "l.json").exists()
    zero, one = list(LINE).index(0.0), list(LINE).index(1.0)
    for name, result in zip(("scratch_a", "finetune_a"), found):
        run = load_trained(runs[name])
        start = build_algorithm(run.spec)
        pretrained = run.info["transfer"]["pretrained"]
        if pretrained is not None:
            cache = pretrained_dir(run.directory.parent.parent, pretrained) / WEIGHTS
            start.featurizer.load_state_dict(torch.load(cache, weights_only=True))
        assert result["line"]["train"][zero] == pytest.approx(_train_loss(start, run), rel=1e-5)
        assert result["line"]["train"][one] == pytest.approx(_train_loss(run.algorithm, run))
        assert result["slice"]["train"][10][10] == pytest.approx(result["line"]["train"][one])
    assert found[0]["line"]["train"][zero] != pytest.approx(found[1]["line"]["train"][zero])


@pytest.mark.slow  # trains for several seconds; the fast subset leaves it out
def test_runs_of_different_tasks_are_refused_in_one_line(runs, tmp_path, capsys):
    with pytest.raises(UserError, match="differ in dataset"):
        compare([runs["scratch_a"], runs["scratch_b"]], tmp_path / "l.png")
    argv = ["--runs", str(runs["finetune_a"]), str(runs["scratch_b"]), "--task", "landscape_toy_a"]
    assert main([*argv, "--out", str(tmp_path / "l.png")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and err.count("\n") == 1 and "landscape_toy_b" in err
    assert not (tmp_path / "l.png").exists()


@pytest.mark.slow  # trains for several seconds; the fast subset leaves it out
def test_an_unfinished_run_is_refused(runs, tmp_path):
    partial = tmp_path / "out" / "runs" / runs["scratch_a"].name
    shutil.copytree(runs["scratch_a"], partial)
    (partial / records.DONE).unlink()
    with pytest.raises(UserError, match="partial"):
        compare([partial, runs["finetune_a"]], tmp_path / "l.png")
