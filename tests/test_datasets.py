"""Dataset suite contract: every dataset passes check_dataset in tiny size, layouts and errors are
clear."""

from __future__ import annotations

import gzip

import pytest
import torch

from bench.cli import main
from bench.datasets import DATASETS
from bench.datasets.genomic import (
    encode,
    read_sequence_file,
    reverse_complement,
    sequence_file_dataset,
)
from bench.datasets.image_folder import augment_batch
from bench.errors import DataNotFoundError, UserError
from bench.hparams import space_for
from bench.testing import check_dataset

GENERATED = [
    "cdsprites_n2",
    "cdsprites_n5",
    "cdsprites_n10",
    "cdsprites_n15",
    "genomic_toy",
    "genomic_toy_spurious",
    "fish_toy",
    "irm_sem",
    "bottleneck_toy",
    "spurious_toy",
    "spurious_toy_oracle",
]
REAL = ["rmnist", "pacs", "gue_tf", "gue_prom_core", "gue_prom_300"]
ABSENT = [
    "vlcs",
    "office_home",
    "terra_incognita",
    "domain_net",
]  # declared layouts, no data in ../shared/data


@pytest.mark.parametrize("name", GENERATED)
def test_generated_datasets_pass_the_contract(name):
    check_dataset(DATASETS.get(name))


@pytest.mark.parametrize("name", REAL)
def test_real_datasets_pass_the_contract(name, data_dir):
    check_dataset(DATASETS.get(name), root=data_dir)


@pytest.mark.parametrize("name", GENERATED[:1] + GENERATED[4:])
def test_data_seed_changes_generated_data(name):
    cls = DATASETS.get(name)
    a, b = cls(None, data_seed=0, size="tiny"), cls(None, data_seed=1, size="tiny")
    env = cls.env_names()[0]
    assert not torch.equal(a.envs[env].batch(None)[0], b.envs[env].batch(None)[0])


def test_list_shows_every_dataset_with_its_environments(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in GENERATED + REAL + ABSENT:
        line = next(line for line in out.splitlines() if line.startswith(name + " "))
        assert ", ".join(DATASETS.get(name).env_names()) in line


@pytest.mark.parametrize("name", ABSENT)
def test_declared_layouts_without_data_raise_the_missing_data_error(name, tmp_path):
    with pytest.raises(DataNotFoundError, match=r"/<domain>/<class>/\*\.jpg") as info:
        DATASETS.get(name)(str(tmp_path), data_seed=0, size="tiny")
    assert str(tmp_path) in str(info.value) and "--data-dir" in str(info.value)


def test_wrong_data_dir_gives_one_line_naming_the_layout(tmp_path, capsys):
    code = main(
        [
            "run",
            "--dataset",
            "pacs",
            "--data-dir",
            str(tmp_path / "nowhere"),
            "--steps",
            "1",
            "--output-dir",
            str(tmp_path / "out"),
        ]
    )
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    assert (
        "pacs/<domain>/<class>/*.jpg" in err
        and str(tmp_path / "nowhere" / "pacs") in err
        and "--data-dir" in err
    )


def _fake_image_folder(root, domains, classes, per_class, size=80):
    from PIL import Image

    for d in domains:
        for c in classes:
            folder = root / d / c
            folder.mkdir(parents=True)
            for i in range(per_class):
                Image.new("RGB", (size, size), (40 * i, 0, 0)).save(folder / f"{i}.jpg")


def test_image_folder_resizes_and_checks_domains_classes_and_counts(tmp_path):
    vlcs = DATASETS.get("vlcs")
    _fake_image_folder(tmp_path / "VLCS", vlcs.env_names(), vlcs.CLASSES, per_class=2)
    data = vlcs(str(tmp_path), data_seed=0, size="full")
    x, y = data.envs["SUN09"].batch(None)
    assert x.shape == (10, 3, 64, 64) and y.tolist() == [0, 0, 1, 1, 2, 2, 3, 3, 4, 4]

    _fake_image_folder(
        tmp_path / "pacs",
        ["art_painting", "cartoon", "photo", "sketch"],
        DATASETS.get("pacs").CLASSES,
        per_class=1,
        size=64,
    )
    assert len(DATASETS.get("pacs")(str(tmp_path), 0, size="tiny").envs["photo"]) == 7
    with pytest.raises(
        UserError, match="official"
    ):  # a copy with missing images is caught at full size
        DATASETS.get("pacs")(str(tmp_path), 0, size="full")

    (tmp_path / "VLCS" / "LabelMe" / "cat").mkdir()
    with pytest.raises(UserError, match="expected"):
        vlcs(str(tmp_path), data_seed=0, size="tiny")


def test_augmentation_is_an_hparam_and_keeps_shape_and_range():
    from bench.algorithms import ALGORITHMS

    assert "augment" in space_for(ALGORITHMS.get("erm"), DATASETS.get("pacs"))
    assert "revcomp" in space_for(ALGORITHMS.get("erm"), DATASETS.get("gue_tf"))
    torch.manual_seed(0)
    x = torch.rand(16, 3, 64, 64)
    out = augment_batch(x)
    assert out.shape == x.shape and 0 <= out.min() and out.max() <= 1 and not torch.allclose(out, x)


def test_one_hot_and_reverse_complement():
    codes = encode(["AACGN", "ACG"], 5)  # the short one is N-padded around its centre
    assert codes.tolist() == [[0, 0, 1, 2, 4], [0, 1, 2, 4, 4]]
    x = torch.nn.functional.one_hot(codes[:1].long(), 5)[..., :4].transpose(1, 2).float()
    torch.manual_seed(0)
    flipped = reverse_complement(x.repeat(64, 1, 1))
    bases = {"".join("ACGTN"[int(c.argmax()) if c.sum() else 4] for c in seq.T) for seq in flipped}
    assert bases == {"AACGN", "NCGTT"}


def test_sequence_files_csv_fasta_as_environments(tmp_path):
    csv = tmp_path / "dna.csv.gz"
    with gzip.open(csv, "wt") as f:
        f.write("sequence,label,split\nACGTACGT,1,train\nTTTTAAAA,0,train\nGGGGCCCC,1,test\n")
    fasta = tmp_path / "dna.fa"
    fasta.write_text(">a label=1 split=train\nACGT\nACGT\n>b label=0 split=test\nTTTTAAAA\n")
    assert read_sequence_file(fasta)["sequence"].tolist() == ["ACGTACGT", "TTTTAAAA"]
    for path in (csv, fasta):
        cls = sequence_file_dataset("my_dna", str(path), environments=("train", "test"), seq_len=8)
        data = cls(None, data_seed=0)
        assert data.TEST_ENVS == ("test",) and len(data.envs["train"]) == (2 if path == csv else 1)
        assert data.envs["test"].batch(None)[0].shape[1:] == (4, 8)


class _FakeHub:
    """Stands in for a HuggingFace dataset (no network): rows with a PIL image, a domain string and
    a ClassLabel."""

    def __init__(self, rows, classes):
        label = type("ClassLabel", (), {"int2str": lambda self, i: classes[i]})()
        self.rows, self.features = rows, {"label": label, "domain": object()}

    def __iter__(self):
        return iter(self.rows)


def test_download_writes_the_hub_copy_in_the_folder_layout(tmp_path, monkeypatch):
    import sys
    import types

    from PIL import Image

    pacs = DATASETS.get("pacs")
    rows = [
        {"image": Image.new("RGB", (90, 90), (i, 0, 0)), "domain": d, "label": i}
        for d in pacs.env_names()
        for i in range(7)
    ]
    fake = types.SimpleNamespace(load_dataset=lambda hub_id, split: _FakeHub(rows, pacs.CLASSES))
    monkeypatch.setitem(sys.modules, "datasets", fake)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")  # the fake hub is local: no reachability check
    data = pacs(str(tmp_path), data_seed=0, size="tiny", download=True)
    assert (tmp_path / "pacs" / "sketch" / "person").is_dir()
    assert data.envs["cartoon"].y.tolist() == list(range(7)) and data.envs["cartoon"].x.shape[
        1:
    ] == (3, 64, 64)
