"""Start weights (--weights), the scikit-learn linear probe, and the PACS photo -> style tasks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from torch import nn

from bench import records, runner
from bench.cli import main
from bench.errors import UserError
from bench.networks import build_featurizer
from bench.spec import RuntimeOptions, make_spec
from bench.start_weights import weights_value
from bench.transfer.sklearn_probe import ABSENT_BIAS, fit_logistic_head


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """A ResNet-18 state dict with known values, saved like a user's own checkpoint."""
    torch.manual_seed(123)
    path = tmp_path_factory.mktemp("weights") / "resnet18.pt"
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return str(path)


def _resnet(weights: str) -> nn.Module:
    return build_featurizer(
        (3, 32, 32), {"featurizer": "resnet18", "weights": weights, "resnet_dropout": 0.0}
    )


def test_weights_file_is_loaded_and_pinned_by_its_digest(weights_file, tmp_path):
    value = weights_value(weights_file)
    assert "@sha256:" in value
    saved = torch.load(weights_file, weights_only=True)
    torch.manual_seed(0)  # a different random init than the file's
    loaded = _resnet(value).network.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in saved.items() if not k.startswith("fc."))
    assert not torch.equal(_resnet("none").network.conv1.weight, saved["conv1.weight"])

    changed = tmp_path / "changed.pt"
    changed.write_bytes(open(weights_file, "rb").read())
    pinned = weights_value(str(changed))
    torch.save({k: v + 1 for k, v in saved.items()}, changed)
    with pytest.raises(UserError, match="changed since this run"):
        _resnet(pinned)


def test_missing_imagenet_weights_say_what_to_download(monkeypatch):
    def offline(self, *args, **kwargs):
        raise OSError("network unreachable")

    monkeypatch.setattr(torchvision.models.ResNet18_Weights, "get_state_dict", offline)
    with pytest.raises(UserError) as err:
        _resnet("imagenet")
    message = str(err.value)
    assert (
        "resnet18-f37072fd.pth" in message
        and "hub/checkpoints" in message
        and "--weights PATH" in message
    )


def test_weights_flag_needs_a_resnet_featurizer(tmp_path, weights_file, capsys):
    code = main(
        [
            "run",
            "--dataset",
            "debug",
            "--weights",
            weights_file,
            "--steps",
            "1",
            "--output-dir",
            str(tmp_path),
        ]
    )
    assert code == 2 and "--weights needs a ResNet featurizer" in capsys.readouterr().err


def test_reinit_above_n_keeps_the_first_blocks_of_the_given_weights(
    tmp_path, weights_file, data_dir
):
    """--weights replaces the pretraining stage: block1 holds the file's weights, block2 is
    re-initialised."""
    spec = make_spec(
        "reinit_above_n",
        "pacs_photo_to_sketch",
        size="tiny",
        steps=1,
        overrides={"featurizer": "resnet18", "weights": weights_value(weights_file), "n": 1},
    )
    ctx = runner.prepare(
        spec,
        RuntimeOptions(output_dir=tmp_path, data_dir=data_dir, progress=False, threads=1),
        tmp_path / "run",
    )
    saved = torch.load(weights_file, weights_only=True)
    net = ctx.algorithm.featurizer.network
    assert torch.equal(net.conv1.weight, saved["conv1.weight"])
    assert not torch.equal(net.layer1[0].conv1.weight, saved["layer1.0.conv1.weight"])
    info = records.read_json(tmp_path / "run" / records.SPEC)["transfer"]
    assert info["pretrained"].startswith("weights:") and info["copied_blocks"] == ["block1"]


def test_frozen_batchnorm_keeps_its_running_statistics(tmp_path, weights_file, data_dir):
    spec = make_spec(
        "linear_probe",
        "pacs_photo_to_sketch",
        size="tiny",
        steps=3,
        eval_every=3,
        overrides={"featurizer": "resnet18", "weights": weights_value(weights_file)},
    )
    out = runner.run(
        spec, RuntimeOptions(output_dir=tmp_path, data_dir=data_dir, progress=False, threads=1)
    )
    state = torch.load(out.run_dir / records.CHECKPOINT, weights_only=False)["algorithm"]
    saved = torch.load(weights_file, weights_only=True)
    assert torch.equal(state["featurizer.network.bn1.running_mean"], saved["bn1.running_mean"])


def test_sklearn_head_reproduces_logistic_regression_and_picks_c_on_validation():
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    gen = np.random.default_rng(0)
    z = gen.normal(size=(400, 6))
    y = np.argmax(z[:, :3] + 0.3 * gen.normal(size=(400, 3)), 1)
    x = (
        z * np.array([1, 5, 0.1, 1, 1, 1]) + 3
    )  # unequal scales and offsets: the head must undo the standardisation
    head = nn.Linear(6, 3)
    info = fit_logistic_head(head, (x[:300], y[:300]), (x[300:], y[300:]))
    assert info["val_acc"][f"{info['C']:g}"] == max(info["val_acc"].values())
    scaler = StandardScaler().fit(x[:300])
    reference = LogisticRegression(C=info["C"], max_iter=2000).fit(
        scaler.transform(x[:300]), y[:300]
    )
    with torch.no_grad():
        ours = head(torch.tensor(x[300:], dtype=torch.float32)).argmax(1).numpy()
    assert (ours == reference.predict(scaler.transform(x[300:]))).mean() > 0.99
    assert (ours == y[300:]).mean() > 0.8


def test_sklearn_head_maps_binary_and_absent_classes():
    gen = np.random.default_rng(1)
    x = gen.normal(size=(200, 3))
    y = np.where(x[:, 0] > 0, 2, 0)  # classes 0 and 2 of 4; 1 and 3 absent
    head = nn.Linear(3, 4)
    info = fit_logistic_head(head, (x[:150], y[:150]), (x[150:], y[150:]))
    assert info["absent_classes"] == [1, 3] and head.bias[1].item() == ABSENT_BIAS
    with torch.no_grad():
        pred = head(torch.tensor(x[150:], dtype=torch.float32)).argmax(1).numpy()
    assert (pred == y[150:]).mean() > 0.9

    one_logit = nn.Linear(3, 1)
    fit_logistic_head(
        one_logit, (x[:150], (y[:150] > 0).astype(int)), (x[150:], (y[150:] > 0).astype(int))
    )
    with torch.no_grad():
        assert (
            (one_logit(torch.tensor(x[150:], dtype=torch.float32))[:, 0] > 0).numpy()
            == (y[150:] > 0)
        ).mean() > 0.9


@pytest.mark.slow
def test_sklearn_probe_end_to_end_on_mnist_ab(tmp_path, data_dir):
    """The probe of A's features on B: fitted before training, recorded, and unchanged by the
    training steps."""
    spec = make_spec(
        "linear_probe",
        "mnist_ab",
        size="tiny",
        steps=5,
        eval_every=5,
        overrides={"probe": "sklearn", "pretrain_steps": 100},
    )
    out = runner.run(
        spec, RuntimeOptions(output_dir=tmp_path, data_dir=data_dir, progress=False, threads=1)
    )
    info = records.read_json(out.run_dir / records.SPEC)["transfer"]["sklearn_probe"]
    assert (
        info["C"] in (1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0, 1e3, 1e4) and info["n_train"] > 100
    )
    last = records.read_records(out.run_dir / records.RESULTS)[-1]
    assert last["eval"]["target_test"]["in"]["acc"] > 0.5  # five classes: chance is 0.2
