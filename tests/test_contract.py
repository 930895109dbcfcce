"""The Algorithm and Dataset contracts, applied to everything in the registries.

No hand-kept lists: a new algorithm or dataset is checked as soon as it is registered, and
so is the plugin template in the README (loaded the way ``--import file.py`` loads it).
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from bench import records, runner
from bench.algorithms import ALGORITHMS, Algorithm
from bench.algorithms.base import classification_loss, concat_inputs, env_losses
from bench.datasets import DATASETS
from bench.errors import DataNotFoundError
from bench.hparams import NON_NEGATIVE, LogUniform, space_for
from bench.registry import import_plugins
from bench.spec import RuntimeOptions, make_spec
from bench.testing import _hparams, _train, check_algorithm, check_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

pytestmark = pytest.mark.usefixtures("one_thread")  # tiny tensors: see conftest.one_thread


def _dataset_param(name: str):
    """ResNet-50 protocols (DomainBed's images at 224 px) are slow even in tiny size."""
    slow = DATASETS.get(name).FEATURIZER == "resnet50"
    return pytest.param(name, marks=pytest.mark.slow) if slow else name


@pytest.mark.parametrize("name", ALGORITHMS.names())
def test_registered_algorithm_passes_the_contract(name):
    check_algorithm(ALGORITHMS.get(name))


@pytest.mark.parametrize("name", [_dataset_param(name) for name in DATASETS.names()])
def test_registered_dataset_passes_the_contract(name):
    cls = DATASETS.get(name)
    try:
        needs_files = bool(cls.data_paths(str(SHARED_DATA)))
    except DataNotFoundError:
        pytest.skip(f"{name}: its files are not in {SHARED_DATA}")
    check_dataset(cls, root=str(SHARED_DATA) if needs_files else None)


# -- the README's plugin template, loaded like --import path/to/plugin.py ----------------------


def _readme_plugin_source() -> str:
    section = README.read_text().split("## Adding an algorithm")[1].split("\n## ")[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


@pytest.fixture
def readme_plugins(tmp_path):
    """The README's algorithms registered from a plugin file, removed from the registry after."""
    path = tmp_path / "readme_plugin.py"
    path.write_text(_readme_plugin_source())
    before = set(ALGORITHMS.names())
    modules = set(sys.modules)
    import_plugins([str(path)])
    added = sorted(set(ALGORITHMS.names()) - before)
    yield added
    for name in added:
        del ALGORITHMS._entries[name]
    for module in set(sys.modules) - modules:
        del sys.modules[module]


def test_readme_plugins_are_picked_up_and_pass_the_contract(readme_plugins, tmp_path):
    assert readme_plugins == ["my_and_mask", "my_method"]
    for name in readme_plugins:
        check_algorithm(ALGORITHMS.get(name))
    assert "my_lambda" in space_for(ALGORITHMS.get("my_method"), DATASETS.get("debug"))
    options = RuntimeOptions(output_dir=tmp_path / "runs", progress=False, threads=1)
    outcome = runner.run(make_spec("my_method", "debug", size="tiny", steps=3), options)
    assert outcome.status == "ok" and (outcome.run_dir / records.DONE).exists()


@pytest.mark.parametrize("name", ["my_method", "my_and_mask"])
def test_readme_plugins_get_l2_grad_cos_and_exact_resume(readme_plugins, name):
    cls, data = ALGORITHMS.get(name), DATASETS.get("debug")(None, data_seed=0, size="tiny")
    hp = {**_hparams(cls, DATASETS.get("debug")), "l2": 0.1}
    torch.manual_seed(0)
    weights = sum(p.detach().pow(2).sum() for p in cls(data.INPUT_SHAPE, 2, 2, hp).parameters())
    algorithm, stats = _train(cls, data, hp, steps=1)
    if "nll" in stats[0]:  # the loss minimised is nll + penalty + l2 * sum ||w||^2
        assert stats[0]["loss"] >= stats[0]["nll"] + 0.1 * float(weights) * (1 - 1e-6)
    assert -1.0 <= stats[0]["grad_cos"] <= 1.0
    straight, _ = _train(cls, data, hp, steps=4)
    first, _ = _train(cls, data, hp, steps=2)
    resumed = cls(data.INPUT_SHAPE, 2, 2, hp)
    resumed.load_state_dict(first.state_dict())
    _continue(resumed, data, hp, steps=range(2, 4))
    x = data.envs["e0"].batch(torch.arange(8))[0]
    assert torch.equal(straight.predict(x), resumed.predict(x)) and int(resumed.step) == 4


def _continue(algorithm, data, hp, steps) -> None:
    from bench.testing import _minibatches

    names = data.env_names()[:-1]
    for step in steps:
        algorithm.update(_minibatches(data, names, min(hp["batch_size"] or 32, 32), step))


# -- plugins that break the contract are caught ----------------------------------------------


class _Plugin(Algorithm):
    VERSION = 1

    def update(self, minibatches, unlabeled=None):
        nll = torch.stack(env_losses(self.predict(concat_inputs(minibatches)), minibatches)).mean()
        return {"loss": self.minimize(nll).item()}


class DropsL2(_Plugin):
    """Overrides the step and forgets the base's l2 term."""

    def minimize(self, loss, optimizer=None):
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.finish_update()
        return loss


class ReadsButIgnoresL2(_Plugin):
    """Reads ``l2`` (so it is not 'unread') but never adds it to what is minimised."""

    def update(self, minibatches, unlabeled=None):
        logits = self.predict(concat_inputs(minibatches))
        nll = classification_loss(logits, torch.cat([y for _, y in minibatches]))
        self.optimizer.zero_grad(set_to_none=True)
        nll.backward()
        self.optimizer.step()
        self.finish_update()
        return {"loss": nll.item(), "l2": float(self.hparams["l2"])}


class DeclaresAnUnusedHparam(_Plugin):
    HPARAMS = {"my_beta": LogUniform(1.0, "never read", low=0.1, high=10.0, domain=NON_NEGATIVE)}


class IgnoresTheSeed(_Plugin):
    def build(self) -> None:
        torch.manual_seed(0)
        super().build()


@pytest.mark.parametrize(
    "cls, message",
    [
        (DropsL2, "never reads .*l2|ignores the l2 hparam"),
        (ReadsButIgnoresL2, "ignores the l2 hparam"),
        (DeclaresAnUnusedHparam, "never reads .*my_beta"),
        (IgnoresTheSeed, "another seed gave the same logits"),
    ],
)
def test_check_algorithm_catches_a_broken_plugin(cls, message):
    with pytest.raises(AssertionError, match=message):
        check_algorithm(cls)


def test_a_plugin_writing_only_its_loss_passes():
    check_algorithm(_Plugin)
