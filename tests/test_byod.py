"""Bring your own data: ``folder:``, ``csv:`` and ``hf:`` on data made in tmp_path (no network)."""

from __future__ import annotations

import csv
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from bench import runner
from bench.cli import main
from bench.datasets import DATASETS, user_tables
from bench.errors import UserError
from bench.spec import make_spec
from bench.testing import check_dataset

README = Path(__file__).resolve().parents[1] / "README.md"
FAST = ["--steps", "3", "--n-trials", "1", "--threads", "1", "--jobs", "1"]  # later flags win


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Fingerprint and listing caches in tmp: tests never touch ~/.cache."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def make_folder(root: Path, size: int = 28, gray: bool = True, per_class: int = 6) -> Path:
    """root/<domain>/<class>/<i>.png: 3 domains, classes 0 and 1 (1 has a bright square), seeded."""
    from PIL import Image

    gen = np.random.default_rng(0)
    for domain in ("scanner_a", "scanner_b", "scanner_c"):
        for label in ("0", "1"):
            (root / domain / label).mkdir(parents=True)
            for i in range(per_class):
                pixels = (gen.random((size, size)) * 80).astype(np.uint8)
                if label == "1":
                    pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] += 150
                rgb = np.stack([pixels] * 3, -1)
                image = Image.fromarray(pixels, "L") if gray else Image.fromarray(rgb, "RGB")
                image.save(root / domain / label / f"{i:04d}.png")
    return root


def table_rows(n: int = 30) -> list[dict]:
    """Three sites, feature ``a`` shifted by 0, 5, 10 (standardising must not see the test site)."""
    gen = np.random.default_rng(1)
    rows = []
    for site, shift in (("north", 0.0), ("south", 5.0), ("west", 10.0)):
        for _ in range(n):
            y = int(gen.integers(2))
            rows.append(
                {
                    "site": site,
                    "y": ("no", "yes")[y],
                    "a": y + shift + gen.normal(0, 0.3),
                    "b": float(gen.normal()),
                    "comment": "text",
                }
            )
    return rows


def make_csv(path: Path) -> Path:
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(table_rows(1)[0]))
        writer.writeheader()
        writer.writerows(table_rows())
    return path


def make_hf(path: Path, images: bool = False) -> Path:
    hf = pytest.importorskip("datasets")
    rows = table_rows(8)
    columns = {"domain": [r["site"] for r in rows], "label": [int(r["y"] == "yes") for r in rows]}
    if images:
        from PIL import Image

        columns["image"] = [Image.new("L", (20, 20), 200 * lab) for lab in columns["label"]]
        data = hf.Dataset.from_dict(
            columns,
            features=hf.Features(
                {"domain": hf.Value("string"), "label": hf.Value("int64"), "image": hf.Image()}
            ),
        )
    else:
        columns.update(a=[r["a"] for r in rows], b=[r["b"] for r in rows])
        data = hf.Dataset.from_dict(columns)
    data.save_to_disk(str(path))
    return path


def sweep_then_board(name: str, out: Path, jobs: int, capsys) -> str:
    argv = [
        "sweep",
        "--algorithms",
        "erm,vrex",
        "--datasets",
        name,
        *FAST,
        "--jobs",
        str(jobs),
        "--output-dir",
        str(out),
    ]
    assert main(argv) == 0
    assert (
        main(["leaderboard", "--runs", str(out), "--out", str(out / "board"), "--no-figures"]) == 0
    )
    return capsys.readouterr().out


@pytest.mark.parametrize("form", ["folder", "csv", "hf"])
def test_leave_one_domain_out_sweep_and_board(form, tmp_path, capsys):
    if form == "folder":
        name, label = f"folder:{make_folder(tmp_path / 'digits')}", "folder:digits"
    elif form == "csv":
        label = "csv:sites.csv?env=site&label=y"
        name = f"csv:{make_csv(tmp_path / 'sites.csv')}?env=site&label=y"
    else:
        name, label = f"hf:{make_hf(tmp_path / 'hfsites')}", "hf:hfsites"
    # names differ per test: one process refuses two live folders of one name (see below)
    printed = sweep_then_board(name, tmp_path / "out", 1, capsys)
    assert "6 runs: 0 done / 0 partial / 6 new" in printed  # 2 algorithms x 3 test domains
    line = rf"\[\d/\d\] ok (erm|vrex) on {re.escape(label)}, test"
    assert re.search(line, printed), printed  # no bar without a terminal: a line per run
    board = (tmp_path / "out" / "board" / "README.md").read_text()
    assert f"## {label}" in board and str(tmp_path) not in board.split("## ", 1)[1].split("```")[0]
    header = (tmp_path / "out" / "board" / "selected.csv").read_text().splitlines()[0]
    assert "acc_pct" in header.split(",")


@pytest.mark.slow  # end to end through the CLI or several processes: seconds each
def test_jobs_2_workers_rebuild_all_three_forms(tmp_path, capsys):
    """Loky workers are fresh processes: they know the datasets only through the options."""
    names = [
        f"folder:{make_folder(tmp_path / 'digits_jobs', size=16, per_class=2)}",
        f"csv:{make_csv(tmp_path / 'sites_jobs.csv')}?env=site&label=y",
        f"hf:{make_hf(tmp_path / 'hf_jobs')}",
    ]
    argv = [
        "sweep",
        "--algorithms",
        "erm",
        "--datasets",
        ",".join(names),
        *FAST,
        "--jobs",
        "2",
        "--output-dir",
        str(tmp_path / "out"),
    ]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "trained 9, diverged 0" in printed
    board = ["leaderboard", "--runs", str(tmp_path / "out"), "--out", str(tmp_path / "board")]
    assert main([*board, "--no-figures"]) == 0


def test_grayscale_28px_folder_trains_at_1x28x28_without_augmentation(tmp_path):
    ds_cls = DATASETS.get(f"folder:{make_folder(tmp_path / 'mnistish')}")
    assert ds_cls.INPUT_SHAPE == (1, 28, 28) and ds_cls.NUM_CLASSES == 2
    assert ds_cls.FEATURIZER == "small_cnn"
    check_dataset(ds_cls)
    spec = make_spec("erm", f"folder:{tmp_path / 'mnistish'}", steps=3)
    assert spec.dataset == "folder:mnistish" and spec.hparams["augment"] == "none"
    data = ds_cls(None, 0, size="tiny")
    assert data.augmentation(spec.hparams) is None  # no flips of digits unless chosen
    x, _ = data.envs["scanner_a"].batch(torch.arange(4), train=True)
    assert x.shape == (4, 1, 28, 28)
    for choice in ("colour", "crop_flip_colour"):  # chosen: they work on one channel
        augmented = data.augmentation({"augment": choice})(torch.rand(4, 1, 28, 28))
        assert augmented.shape == (4, 1, 28, 28)


def test_sizes_disagree_most_common_wins_and_image_size_overrides(tmp_path):
    from PIL import Image

    root = make_folder(tmp_path / "mixed", size=24, gray=False)
    Image.new("RGB", (40, 30)).save(root / "scanner_a" / "0" / "odd.png")
    assert DATASETS.get(f"folder:{root}").INPUT_SHAPE == (3, 24, 24)
    forced = DATASETS.get(f"folder:{root}?image_size=16")
    assert forced.INPUT_SHAPE == (3, 16, 16) and forced.NAME == "folder:mixed?image_size=16"
    check_dataset(forced)


def test_moving_the_folder_keeps_the_run_id_and_content_changes_it(tmp_path):
    first = make_folder(tmp_path / "a" / "digits_moved")
    before = make_spec("erm", f"folder:{first}", steps=3)
    moved = tmp_path / "b" / "digits_moved"
    moved.parent.mkdir()
    shutil.move(str(first), str(moved))
    after = make_spec("erm", f"folder:{moved}", steps=3)
    assert after.run_id == before.run_id and after.dataset == "folder:digits_moved"
    other = (moved / "scanner_b" / "1" / "0000.png").read_bytes()
    (moved / "scanner_a" / "0" / "0000.png").write_bytes(other)
    assert make_spec("erm", f"folder:{moved}", steps=3).run_id != before.run_id


def test_two_live_folders_with_one_name_are_refused(tmp_path):
    DATASETS.get(f"folder:{make_folder(tmp_path / 'x' / 'same')}")
    with pytest.raises(UserError, match="both get the name folder:same"):
        DATASETS.get(f"folder:{make_folder(tmp_path / 'y' / 'same')}")


def test_one_relative_name_from_two_directories_never_shares_a_dataset(tmp_path, monkeypatch):
    a = make_folder(tmp_path / "a" / "cwd_data")
    b = make_folder(tmp_path / "b" / "cwd_data", size=16)
    monkeypatch.chdir(tmp_path / "a")
    first = DATASETS.get("folder:cwd_data")
    built = runner.load_dataset("folder:cwd_data", None, 0, "tiny")
    assert first.LOCATION == a and first.NAME == "folder:cwd_data"
    monkeypatch.chdir(tmp_path / "b")
    with pytest.raises(UserError, match="both get the name folder:cwd_data"):
        DATASETS.get("folder:cwd_data")  # b's folder, while a's is still there
    shutil.rmtree(a)
    second = DATASETS.get("folder:cwd_data")
    assert second.LOCATION == b and second.NAME == "folder:cwd_data"  # the label stays path-free
    again = runner.load_dataset("folder:cwd_data", None, 0, "tiny")
    assert again is not built and again.envs["scanner_a"].x.shape[-2:] == (16, 16)


def test_the_label_of_a_saved_hf_folder_never_asks_the_hub(tmp_path, monkeypatch):
    made = DATASETS.get(f"hf:{make_hf(tmp_path / 'hf_label')}")
    monkeypatch.setattr(user_tables, "hub_datasets", lambda *_: pytest.fail("asked the hub"))
    assert made.NAME == "hf:hf_label" and DATASETS.get("hf:hf_label") is made  # not a hub id


def test_a_folder_edited_in_place_is_read_again(tmp_path):
    root = make_folder(tmp_path / "edited")
    before = DATASETS.get(f"folder:{root}")
    built = runner.load_dataset("folder:edited", None, 0, "tiny")
    assert DATASETS.get(f"folder:{root}") is before  # same location and content: reused
    (root / "scanner_a" / "0" / "0000.png").write_bytes(
        (root / "scanner_a" / "1" / "0000.png").read_bytes()
    )
    after = DATASETS.get(f"folder:{root}")
    assert after is not before and after.NAME == before.NAME == "folder:edited"
    assert DATASETS.get("folder:edited") is after
    fresh = runner.load_dataset("folder:edited", None, 0, "tiny")
    assert fresh is not built and not torch.equal(
        fresh.envs["scanner_a"].x, built.envs["scanner_a"].x
    )


@pytest.mark.parametrize(
    "damage, message",
    [
        ("classes", "domain 'scanner_b' lacks class folder\\(s\\) 1"),
        ("corrupt", "cannot decode image .*0000.png"),
        ("text", "notes.txt is not an image file"),
    ],
)
def test_layout_errors_are_one_line_naming_the_problem(damage, message, tmp_path, capsys):
    root = make_folder(tmp_path / f"broken_{damage}")
    if damage == "classes":
        shutil.rmtree(root / "scanner_b" / "1")
    elif damage == "corrupt":
        (root / "scanner_c" / "1" / "0000.png").write_bytes(b"not a png")
    else:
        (root / "scanner_a" / "0" / "notes.txt").write_text("hello")
    argv = ["run", "--dataset", f"folder:{root}", "--steps", "1", "--output-dir", str(tmp_path)]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and re.search(message, err), err


def test_csv_labels_sorted_and_standardised_with_training_envs_only(tmp_path):
    ds_cls = DATASETS.get(f"csv:{make_csv(tmp_path / 'sites_std.csv')}?label=y&env=site")
    assert ds_cls.NAME == "csv:sites_std.csv?env=site&label=y"  # options sorted: one name
    assert ds_cls.CLASSES == ("no", "yes") and ds_cls.FEATURES == ("a", "b")
    assert ds_cls.INPUT_SHAPE == (2,)
    data = ds_cls(None, 0)
    envs = data.for_run(data.envs, ("west",))
    train = torch.cat([envs["north"].x, envs["south"].x])
    assert torch.allclose(train.mean(0), torch.zeros(2), atol=1e-5)
    assert torch.allclose(train.std(0), torch.ones(2), atol=1e-5)
    assert envs["west"].x[:, 0].mean() > 1.5  # the test site's shift is not standardised away
    assert data.envs["west"].x[:, 0].mean() > 9  # the dataset stays raw: statistics are per run


def test_csv_options_and_missing_columns_are_clear(tmp_path):
    path = make_csv(tmp_path / "sites_options.csv")
    with pytest.raises(UserError, match="no env column 'env'.*choose one with \\?env=COLUMN"):
        DATASETS.get(f"csv:{path}")
    with pytest.raises(UserError, match="unknown option\\(s\\) colour"):
        DATASETS.get(f"csv:{path}?colour=red")
    assert DATASETS.get(f"csv:{path}?env=site&label=y&features=b").INPUT_SHAPE == (1,)


def test_hf_image_column_makes_an_image_dataset(tmp_path):
    ds_cls = DATASETS.get(f"hf:{make_hf(tmp_path / 'hfimages', images=True)}")
    assert ds_cls.INPUT_SHAPE == (1, 20, 20) and ds_cls.FEATURIZER == "small_cnn"
    check_dataset(ds_cls)


def test_hf_without_the_datasets_package_is_one_line_fast(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "datasets", None)  # `import datasets` now raises ImportError
    start = time.perf_counter()
    name = f"hf:{tmp_path / 'nothing_here'}?env=domain"
    code = main(["run", "--dataset", name, "--output-dir", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and time.perf_counter() - start < 5
    assert err.count("\n") == 1 and "needs the datasets package: pip install 'bench[hub]'" in err


@pytest.mark.slow  # a fresh interpreter (imports torch)
@pytest.mark.parametrize(
    "offline, says",
    [
        ({"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}, "not in the datasets cache"),
        ({"HF_ENDPOINT": "http://127.0.0.1:9"}, "127.0.0.1:9 is unreachable"),  # a closed port
    ],
)
def test_a_hub_id_offline_ends_in_one_line(tmp_path, offline, says):
    # the time (< 5 s) is measured and reported, not asserted: it depends on the machine's load
    env = {
        k: v for k, v in os.environ.items() if not k.startswith("HF_") and "proxy" not in k.lower()
    }
    env.update(offline, HF_HOME=str(tmp_path / "hf"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    env["PYTHONPATH"] = str(README.parent)
    name = "hf:someone/missing?env=e&label=y"
    argv = ["run", "--algorithm", "erm", "--dataset", name, "--output-dir", str(tmp_path / "o")]
    out = subprocess.run(
        [sys.executable, "-m", "bench", *argv], env=env, capture_output=True, text=True
    )
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert "someone/missing" in out.stderr and says in out.stderr


def test_an_unreachable_hub_is_refused_before_torch_is_imported():
    """The hub check runs before the registries (which import torch: seconds on a busy CPU)."""
    code = (
        "import sys; from bench.cli import main; "
        "rc = main(['sweep', '--algorithms', 'erm', '--datasets', 'hf:a/b?env=e&label=y']); "
        "print(rc, 'torch' in sys.modules)"
    )
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    env.update(HF_ENDPOINT="http://127.0.0.1:9", PYTHONPATH=str(README.parent))  # a closed port
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["2", "False"], out.stdout + out.stderr
    assert "127.0.0.1:9 is unreachable" in out.stderr and out.stderr.count("\n") == 1


def test_registry_names_are_case_insensitive_and_prefixes_are_suggested():
    assert DATASETS.canonical("PACS") == "pacs" and DATASETS.get("PACS") is DATASETS.get("pacs")
    with pytest.raises(UserError, match="folder:\\.\\.\\., hf:\\.\\.\\."):
        DATASETS.get("my_images")


def readme_commands() -> list[list[str]]:
    """The fenced block after README's ``<!-- tested: tests/test_byod.py -->``, one argv a line."""
    text = README.read_text()
    after = text.split("<!-- tested: tests/test_byod.py -->", 1)[1]
    block = after.split("```bash\n", 1)[1].split("```", 1)[0]
    lines = [line for line in block.splitlines() if line.strip() and not line.startswith("#")]
    return [shlex.split(line) for line in lines]


def test_readme_bring_your_own_data_block_runs(tmp_path, monkeypatch, capsys):
    """Every command as written, beside the data it names; runs get ``FAST`` (3 steps, 1 job)."""
    monkeypatch.chdir(tmp_path)
    make_folder(tmp_path / "my_images", per_class=3)
    make_csv(tmp_path / "my_table.csv")
    make_hf(tmp_path / "my_hf_data")
    commands = readme_commands()
    assert len(commands) >= 4 and all(c[:3] == ["python", "-m", "bench"] for c in commands)
    for argv in commands:
        extra = FAST if argv[3] == "sweep" else []
        assert main(argv[3:] + extra) == 0, argv
    board = (tmp_path / "byod" / "leaderboard" / "README.md").read_text()
    for label in ("folder:my_images", "csv:my_table.csv?env=site&label=y", "hf:my_hf_data"):
        assert f"## {label}" in board
    assert "vrex on folder:my_images" in capsys.readouterr().out
