"""Behaviour of the dataset suite: the shortcuts are where the protocols say, the real data matches
its counts."""

from __future__ import annotations

import csv
import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.datasets import DATASETS
from bench.datasets.genomic import GUE_SPLITS

# Official PACS counts per domain, in the order dog, elephant, giraffe, guitar, horse, house, person
# (../shared/data/README.md).
PACS_COUNTS = {
    "art_painting": [379, 255, 285, 184, 201, 295, 449],
    "cartoon": [389, 457, 346, 135, 324, 288, 405],
    "photo": [189, 202, 182, 186, 199, 280, 432],
    "sketch": [772, 740, 753, 608, 816, 80, 160],
}


def _colours(env) -> np.ndarray:
    """Per-image colour: the per-channel maximum over the (black-background) image."""
    x, _ = env.batch(None)
    return x.amax(dim=(2, 3)).numpy()


def test_cdsprites_colour_probe_is_perfect_in_training_and_chance_at_test():
    from sklearn.neighbors import KNeighborsClassifier

    data = DATASETS.get("cdsprites_n2")(None, data_seed=0)
    train = [data.envs[name] for name in ("d0", "d1")]
    x_train = np.concatenate([_colours(env) for env in train])
    y_train = torch.cat([env.y for env in train]).numpy()
    probe = KNeighborsClassifier(n_neighbors=1).fit(x_train, y_train)
    assert probe.score(x_train, y_train) > 0.99
    for name in ("val", "test"):
        acc = probe.score(_colours(data.envs[name]), data.envs[name].y.numpy())
        assert abs(acc - 0.5) < 0.05, f"{name}: colour-only accuracy {acc:.3f}, expected chance"


def test_cdsprites_shape_is_invariant_and_balanced():
    data = DATASETS.get("cdsprites_n5")(None, data_seed=0, size="tiny")
    for env in data.envs.values():
        x, y = env.batch(None)
        area = (x.amax(dim=1) > 0).float().sum(dim=(1, 2))
        assert 0.3 < y.float().mean() < 0.7
        assert area.min() > 0  # every shape lies on the canvas
    domain = data.envs["d3"]
    colours = torch.from_numpy(_colours(domain))
    for label in (0, 1):  # one colour per shape inside a training domain
        assert torch.unique(colours[domain.y == label], dim=0).shape[0] == 1


def test_spurious_genomic_toy_erm_fails_out_of_distribution(tmp_path):
    from bench import runner
    from bench.spec import RuntimeOptions, make_spec

    spec = make_spec(
        "erm",
        "genomic_toy_spurious",
        size="tiny",
        steps=100,
        eval_every=99,
        overrides={"seq_width": 32, "seq_depth": 2},
    )
    outcome = runner.run(spec, RuntimeOptions(output_dir=tmp_path, progress=False, threads=1))
    evals = outcome.last_record["eval"]
    train = np.mean(
        [evals[name]["out"]["acc"] for name in ("train_0.1", "train_0.2")]
    )  # held-out, training distribution
    test = evals["test"]["in"]["acc"]
    assert train > 0.75 and test < train - 0.3, f"train {train:.3f} test {test:.3f}"


def test_gue_split_sizes_match_the_files_and_the_published_table(data_dir):
    folder = Path(data_dir) / "genomic"
    files = sorted(folder.glob("gue_*.csv.gz"))
    if not files:
        pytest.skip(f"no GUE files in {folder}")
    assert {f.name.removeprefix("gue_").removesuffix(".csv.gz") for f in files} == set(GUE_SPLITS)
    for path in files:
        with gzip.open(path, "rt") as handle:
            splits = [row["split"] for row in csv.DictReader(handle)]
        task = path.name.removeprefix("gue_").removesuffix(".csv.gz")
        assert tuple(splits.count(s) for s in ("train", "dev", "test")) == GUE_SPLITS[task], task
    tf = DATASETS.get("gue_tf")(data_dir, data_seed=0)
    for name, env in tf.envs.items():
        assert len(env) == sum(GUE_SPLITS[name])
    prom = DATASETS.get("gue_prom_300")(data_dir, data_seed=0)
    assert (len(prom.envs["train"]), len(prom.envs["test"])) == (
        GUE_SPLITS["prom_300_tata"][0],
        GUE_SPLITS["prom_300_tata"][2],
    )
    core = DATASETS.get("gue_prom_core")(data_dir, data_seed=0)
    assert len(core.envs["tata"]) + len(core.envs["notata"]) == sum(GUE_SPLITS["prom_core_all"])


def test_pacs_counts_match_the_official_counts(data_dir):
    if not (Path(data_dir) / "pacs").exists():
        pytest.skip(f"no PACS copy at {Path(data_dir) / 'pacs'}")
    pacs = DATASETS.get("pacs")(data_dir, data_seed=0)
    for domain, counts in PACS_COUNTS.items():
        assert torch.bincount(pacs.envs[domain].y, minlength=7).tolist() == counts, domain
    assert sum(len(env) for env in pacs.envs.values()) == 9991
    x, _ = pacs.envs["photo"].batch(torch.arange(4))
    assert x.shape == (4, 3, 64, 64) and x.dtype == torch.float32
