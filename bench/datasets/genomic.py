"""Real genomic tasks from GUE (Zhou et al., DNABERT-2, 2023), and any CSV/FASTA/hub file of
sequences.

Files: ``genomic/gue_<task>.csv.gz`` with columns ``sequence,label,split`` (train/dev/test;
see ../shared/data/README.md). Sequences are stored as uint8 base codes and one-hot
encoded per batch as 4 x L floats (A, C, G, T; N = all zeros), so the reverse
complement is a flip of both axes. ``revcomp`` (hparam, default on) reverse-complements
a random half of each training batch: binding and promoter labels are strand-symmetric.

Environments (a choice, documented here):
- ``gue_tf``: each transcription-factor task is an environment, all three GUE splits
  pooled (the runner's holdout gives in/out): human_tf_0..4 (ENCODE, human) train,
  mouse_tf_0, 2, 3, 4 are the declared test environments, so the shift is species
  (and factor: the tasks are different TFs; mouse_tf_1 is not in the data copy).
- ``gue_prom_core``: core promoters (70 bp) with a TATA box vs without, each pooled
  over its splits; leave one out, i.e. train on TATA promoters and test on the rest.
- ``gue_prom_300``: the 300 bp TATA promoter task with its official split: ``train``
  (holdout gives validation) and the declared test environment ``test``; dev is unused.
Construction checks every file's split sizes against the published GUE statistics.

Your own data: ``register_sequence_file(name, path, environments=..., seq_len=...)`` in a
plugin module (``--import mylab.data``) registers a dataset read from a CSV(.gz) with
columns sequence,label[,split or another environment column], a FASTA file whose headers
carry ``label=1 split=train``, or ``hf://owner/name`` (HuggingFace hub, all splits; needs
network, so only when you ask for it). Sequences are centre-cropped or N-padded to seq_len.

Defaults: ``seq_cnn``, Adam lr 1e-3, batch 64 per environment, 3001 steps, evaluation every 250.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from bench.datasets.base import EnvData, Environment, MultiEnvDataset, register_dataset
from bench.datasets.files import find_data, hub_datasets
from bench.errors import UserError, reason
from bench.hparams import Choice
from bench.seeding import rng

_LOOKUP = np.full(256, 4, dtype=np.uint8)
for _code, _base in enumerate("ACGT"):
    _LOOKUP[ord(_base)] = _LOOKUP[ord(_base.lower())] = _code

# Published GUE split sizes (train, dev, test) of the files in ../shared/data/genomic.
GUE_SPLITS = {
    "human_tf_0": (32378, 1000, 1000),
    "human_tf_1": (30672, 1000, 1000),
    "human_tf_2": (19000, 1000, 1000),
    "human_tf_3": (27294, 1000, 1000),
    "human_tf_4": (19000, 1000, 1000),
    "mouse_tf_0": (6478, 810, 810),
    "mouse_tf_2": (2620, 328, 328),
    "mouse_tf_3": (1904, 239, 239),
    "mouse_tf_4": (15064, 1883, 1883),
    "prom_300_tata": (4904, 613, 613),
    "prom_core_all": (47356, 5920, 5920),
    "prom_core_notata": (42452, 5307, 5307),
    "prom_core_tata": (4904, 613, 613),
}
SPLITS = ("train", "dev", "test")
HOW_TO_GET = (
    "The GUE files (sequence,label,split) are in the repository's ../shared/data/genomic; "
    "GUE itself is at github.com/MAGICS-LAB/DNABERT_2."
)


def encode(sequences: list[str], length: int) -> Tensor:
    """uint8 codes (n, length): A,C,G,T -> 0..3, anything else -> 4; centre-cropped or N-padded to
    ``length``."""
    if any(len(s) != length for s in sequences):
        sequences = [
            s[max(0, (len(s) - length) // 2) :][:length].ljust(length, "N") for s in sequences
        ]
    raw = np.frombuffer("".join(sequences).encode("ascii"), dtype=np.uint8).reshape(
        len(sequences), length
    )
    return torch.from_numpy(_LOOKUP[raw])


def reverse_complement(x: Tensor) -> Tensor:
    """Reverse-complement a random half of a one-hot (b, 4, L) batch (global torch RNG, seeded by
    the runner)."""
    flip = torch.rand(len(x), device=x.device) < 0.5
    return torch.where(flip[:, None, None], x.flip(1, 2), x)


class SequenceEnvData(EnvData):
    """uint8 base codes (n, L); ``batch`` gives one-hot float (b, 4, L)."""

    def batch(self, idx: Tensor | None, train: bool = False) -> tuple[Tensor, Tensor]:
        codes, y = (self.x, self.y) if idx is None else (self.x[idx], self.y[idx])
        x = torch.nn.functional.one_hot(codes.long(), 5)[..., :4].transpose(1, 2).float()
        if train and self.augment is not None:
            x = self.augment(x)
        return x, y

    def to(self, device: torch.device | str) -> "SequenceEnvData":
        return SequenceEnvData(self.x.to(device), self.y.to(device), self.augment)


def read_sequence_file(path: str | Path) -> dict[str, np.ndarray]:
    """Columns as arrays: ``sequence`` and ``label`` always, ``split`` (and any other column) when
    present.

    CSV(.gz) with a header; FASTA (``>id label=1 split=train``, ``.fa/.fasta[.gz]``); or
    ``hf://owner/name``. A damaged or malformed file is a UserError naming it.
    """
    text = str(path)
    if text.startswith("hf://"):
        return _checked(text, _read_hub(text[len("hf://") :]))
    fasta = any(text.endswith(ext) for ext in (".fa", ".fasta", ".fa.gz", ".fasta.gz"))
    try:
        return _checked(text, _read_fasta(Path(path)) if fasta else _read_csv(path))
    except UserError:
        raise
    except (OSError, EOFError, ValueError, zlib.error) as exc:  # gzip, decoding, parser, empty file
        raise UserError(f"cannot read {path} ({reason(exc)}); replace the file") from None


def _read_hub(name: str) -> dict[str, np.ndarray]:
    where = "a local CSV or FASTA file (register_sequence_file with its path)"
    hub = hub_datasets(name, where).load_dataset(name)
    columns: dict[str, list] = {}
    for split, part in hub.items():
        for key in part.column_names:
            columns.setdefault(key, []).extend(part[key])
        columns.setdefault("split", []).extend([split] * len(part))
    return {key: np.asarray(values) for key, values in columns.items()}


def _read_csv(path: str | Path) -> dict[str, np.ndarray]:
    import pandas as pd

    frame = pd.read_csv(path, dtype={"sequence": str})
    missing = {"sequence", "label"} - set(frame.columns)
    if missing:
        raise UserError(
            f"{path}: missing column(s) {', '.join(sorted(missing))}; need sequence,label[,split]"
        )
    return {key: frame[key].to_numpy() for key in frame.columns}


def _checked(path: str, columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Integer labels and ASCII sequences in every row: a bad cell is named here, not in torch."""
    labels, sequences = columns["label"], columns["sequence"]
    if not np.issubdtype(labels.dtype, np.integer):
        found = labels[:3].tolist()
        raise UserError(f"{path}: column label must hold integer class indices, got {found}")
    bad = next((i for i, s in enumerate(sequences) if not (isinstance(s, str) and s.isascii())), -1)
    if bad >= 0:
        raise UserError(f"{path}: row {bad + 1} has no sequence of bases ({sequences[bad]!r})")
    return columns


def _read_fasta(path: Path) -> dict[str, np.ndarray]:
    opener = gzip.open if path.suffix == ".gz" else open
    records: list[dict[str, Any]] = []
    with opener(path, "rt") as handle:
        for line in handle:
            line = line.strip()
            if line.startswith(">"):
                fields = dict(token.split("=", 1) for token in line[1:].split()[1:] if "=" in token)
                if "label" not in fields:
                    raise UserError(f"{path}: FASTA header {line!r} has no label=<int>")
                records.append({**fields, "sequence": []})
            elif line and records:
                records[-1]["sequence"].append(line)
    columns: dict[str, np.ndarray] = {
        "sequence": np.asarray(["".join(r["sequence"]) for r in records])
    }
    columns["label"] = np.asarray([int(r["label"]) for r in records])
    if all("split" in r for r in records):
        columns["split"] = np.asarray([r["split"] for r in records])
    return columns


class SequenceDataset(MultiEnvDataset):
    """Environments select rows of sequence files: params ``file`` and ``values`` of ``column``."""

    VERSION = 1
    NUM_CLASSES = 2
    FEATURIZER = "seq_cnn"
    N_STEPS = 3001
    EVAL_EVERY = 250
    TINY = 96
    HPARAMS = {
        "revcomp": Choice(
            True, "reverse-complement a random half of each training batch", options=(True, False)
        )
    }
    CHECK_GUE_SPLITS: ClassVar[bool] = True
    METRIC = (
        "mcc"  # GUE's (Zhou et al., 2024, DNABERT-2) standard metric for its classification tasks
    )
    REFERENCE = (
        "GUE (Zhou et al. 2024, DNABERT-2) data, splits and metric (MCC); bench's "
        "sequence CNN at a CPU budget, "
        "not GUE's fine-tuned-transformer protocol"
    )

    def augmentation(self, hparams: Mapping[str, Any]) -> Callable[[Tensor], Tensor] | None:
        return reverse_complement if hparams.get("revcomp") else None

    @classmethod
    def _locate(cls, root: str | None, name: str) -> Path:
        if Path(name).is_absolute():
            return Path(name)
        return find_data(root, [f"genomic/{name}", name], f"{cls.NAME} file {name}", HOW_TO_GET)

    @classmethod
    def data_paths(cls, root: str | None) -> list[Path]:
        files = dict.fromkeys(env.params["file"] for env in cls.ENVIRONMENTS)
        return [cls._locate(root, name) for name in files if "://" not in name]

    def _read(self, name: str) -> dict[str, np.ndarray]:
        if "://" in name:
            return read_sequence_file(name)
        path = self._locate(self.root, name)
        columns = read_sequence_file(path)
        task = name.removeprefix("gue_").removesuffix(".csv.gz")
        if self.CHECK_GUE_SPLITS and task in GUE_SPLITS:
            if "split" not in columns:
                raise UserError(f"{path}: missing column split; GUE has sequence,label,split")
            sizes = tuple(int((columns["split"] == s).sum()) for s in SPLITS)
            if sizes != GUE_SPLITS[task]:
                raise UserError(
                    f"{path}: split sizes {sizes} != published GUE {GUE_SPLITS[task]} "
                    "(train, dev, test)"
                )
        return columns

    def build(self) -> dict[str, EnvData]:
        cache: dict[str, dict[str, np.ndarray]] = {}
        envs: dict[str, EnvData] = {}
        for env in self.ENVIRONMENTS:
            file, column = env.params["file"], env.params.get("column", "split")
            columns = cache[file] = cache.get(file) or self._read(file)
            if column not in columns:
                raise UserError(
                    f"{self.NAME}: {file} has no column {column!r} to select environment "
                    f"{env.name!r}"
                )
            rows = np.flatnonzero(np.isin(columns[column].astype(str), env.params["values"]))
            _check_rows(self, file, env, rows, columns["label"])
            if self.size == "tiny":
                rows = np.sort(
                    rng(self.NAME, self.data_seed, env.name, "tiny").permutation(rows)[: self.TINY]
                )
            labels = torch.from_numpy(columns["label"][rows].astype(np.int64))
            envs[env.name] = SequenceEnvData(
                encode(columns["sequence"][rows].tolist(), self.INPUT_SHAPE[1]), labels
            )
        return envs


def _check_rows(
    dataset: SequenceDataset, file: str, env: Environment, rows: np.ndarray, labels: np.ndarray
) -> None:
    """An environment needs rows, and its labels must be class indices of the dataset."""
    where = f"{dataset.NAME}: {file}"
    if len(rows) == 0:
        values = env.params["values"]
        raise UserError(f"{where} has no rows for environment {env.name!r} (values {values})")
    found = labels[rows]
    outside = found[(found < 0) | (found >= dataset.NUM_CLASSES)]
    if len(outside):
        last = dataset.NUM_CLASSES - 1
        raise UserError(f"{where} has labels outside 0..{last}, e.g. {outside[0]}")


def _gue_env(name: str, task: str, splits: tuple[str, ...] = SPLITS, **params: Any) -> Environment:
    return Environment(name, {"file": f"gue_{task}.csv.gz", "values": splits, **params})


@register_dataset("gue_tf")
class GUETranscriptionFactors(SequenceDataset):
    """GUE TF binding, one environment per task: train on human TFs, test on mouse TFs (species
    shift)."""

    ENVIRONMENTS = tuple(
        _gue_env(f"human_tf_{k}", f"human_tf_{k}", species="human") for k in range(5)
    ) + tuple(_gue_env(f"mouse_tf_{k}", f"mouse_tf_{k}", species="mouse") for k in (0, 2, 3, 4))
    TEST_ENVS = ("mouse_tf_0", "mouse_tf_2", "mouse_tf_3", "mouse_tf_4")
    INPUT_SHAPE = (4, 101)


@register_dataset("gue_prom_core")
class GUECorePromoters(SequenceDataset):
    """GUE core promoter detection (70 bp): promoters with a TATA box vs without as two
    environments."""

    ENVIRONMENTS = (_gue_env("tata", "prom_core_tata"), _gue_env("notata", "prom_core_notata"))
    INPUT_SHAPE = (4, 70)


@register_dataset("gue_prom_300")
class GUEPromoters300(SequenceDataset):
    """GUE 300 bp TATA promoter detection with its official train/test split."""

    ENVIRONMENTS = (
        _gue_env("train", "prom_300_tata", ("train",)),
        _gue_env("test", "prom_300_tata", ("test",)),
    )
    TEST_ENVS = ("test",)
    INPUT_SHAPE = (4, 300)


def sequence_file_dataset(
    name: str,
    path: str,
    environments: tuple[str, ...] = SPLITS,
    test_envs: tuple[str, ...] | None = ("test",),
    seq_len: int = 101,
    column: str = "split",
    num_classes: int = 2,
) -> type[SequenceDataset]:
    """A dataset class whose environments are the rows of ``path`` with ``column`` == each name (not
    registered).

    ``path`` is absolute, ``hf://owner/name``, or relative to the data roots (--data-dir,
    $BENCH_DATA, ...).
    """
    attrs = {
        "NAME": name,
        "ENVIRONMENTS": tuple(
            Environment(env, {"file": path, "column": column, "values": (env,)})
            for env in environments
        ),
        "TEST_ENVS": test_envs,
        "INPUT_SHAPE": (4, seq_len),
        "NUM_CLASSES": num_classes,
        "__doc__": f"Sequences from {path}, environments by column {column!r}.",
        "__module__": __name__,
    }
    return type(f"SequenceFile_{name}", (SequenceDataset,), attrs)


def register_sequence_file(name: str, path: str, **kwargs: Any) -> type[SequenceDataset]:
    """Register ``sequence_file_dataset(name, path, **kwargs)`` under ``name`` (call it from a
    plugin module)."""
    return register_dataset(name)(sequence_file_dataset(name, path, **kwargs))
