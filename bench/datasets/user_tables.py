"""Bring your own data: ``csv:PATH`` (a table) and ``hf:NAME`` (a HuggingFace ``datasets`` dataset).

``csv:PATH?env=env&label=label&features=a,b`` reads one table (CSV, optionally .gz): the
environment column (default ``env``), the label column (default ``label``) and the
feature columns (default: every other numeric column; ``features=`` lists them, e.g. the
positions of a fixed-length numeric sequence). Labels become 0..K-1 in sorted order,
environments are the sorted distinct values of the environment column (leave one out).
Features are standardised per run with the mean and std of that run's TRAINING
environments (all their rows, validation holdout included; never the test environment),
through the dataset's ``for_run`` hook. Network: ``mlp``.

``hf:NAME?env=domain&label=label`` loads NAME with the ``datasets`` library: a folder written
by ``Dataset.save_to_disk`` (``load_from_disk``) or a hub id (``load_dataset``, cached; offline
it fails at once saying what to fetch). All splits are pooled. With an image column (a
``datasets.Image`` feature, or ``image=COLUMN``) it is an image dataset like ``folder:``
(native size, grayscale kept, ``augment`` none by default, ``small_cnn``); otherwise a table
like ``csv:``. See bench/datasets/user_data.py for the naming and identity rules.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Mapping

import numpy as np
import torch
from torch import Tensor

from bench.datasets.base import DATASETS, EnvData, Environment
from bench.datasets.files import hub_datasets, import_hf_datasets
from bench.datasets.user_data import (
    UserDataset,
    UserImageDataset,
    image_geometry,
    local_path,
    once_per_content,
    parse_name,
    with_options,
)
from bench.downloads import hub_offline
from bench.errors import DataNotFoundError, UserError, reason
from bench.seeding import rng

TABLE_OPTIONS = {"env": "env", "label": "label", "features": ""}
HF_OPTIONS = {**TABLE_OPTIONS, "env": "domain", "image": "", "image_size": ""}


def _column(frame: Any, key: str, what: str, name: str) -> np.ndarray:
    if key not in frame.columns:
        columns = ", ".join(map(str, frame.columns))
        raise UserError(
            f"{name}: no {what} column {key!r}; columns: {columns} (choose one with ?{what}=COLUMN)"
        )
    values = frame[key].to_numpy()
    if frame[key].isna().any():
        row = int(np.flatnonzero(frame[key].isna().to_numpy())[0])
        raise UserError(f"{name}: column {key!r} is empty in row {row + 1}; fill or drop that row")
    return values


def env_and_labels(
    frame: Any, options: Mapping[str, str], name: str
) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """(environment per row, label index per row, environment names, classes), both sorted."""
    envs = _column(frame, options["env"], "env", name).astype(str)
    raw = _column(frame, options["label"], "label", name)
    classes, labels = np.unique(raw, return_inverse=True)
    names = tuple(np.unique(envs).tolist())
    if len(names) < 2 or len(classes) < 2:
        raise UserError(
            f"{name}: found {len(names)} environment(s) in column {options['env']!r} and "
            f"{len(classes)} class(es) in {options['label']!r}; need at least 2 of each"
        )
    return envs, labels.astype(np.int64), names, tuple(classes.tolist())


def feature_columns(frame: Any, options: Mapping[str, str], name: str) -> tuple[str, ...]:
    """The features asked for, or every numeric column but the environment and label."""
    import pandas as pd

    if options["features"]:
        chosen = tuple(c.strip() for c in options["features"].split(",") if c.strip())
        for column in chosen:
            _column(frame, column, "features", name)
    else:
        skip = {options["env"], options["label"]}
        numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
        chosen = tuple(str(c) for c in numeric if c not in skip)
    bad = [c for c in chosen if not pd.api.types.is_numeric_dtype(frame[c])]
    if bad or not chosen:
        columns = ", ".join(map(str, frame.columns))
        found = ", ".join(bad) or "none found"
        raise UserError(
            f"{name}: feature column(s) must be numeric; {found} "
            f"(columns: {columns}; choose with ?features=a,b)"
        )
    return chosen


class TableDataset(UserDataset):
    """Rows of one table; environments by a column; features standardised per run (``for_run``)."""

    FEATURIZER = "mlp"
    TINY = 96
    OPTIONS: ClassVar[dict[str, str]]
    FEATURES: ClassVar[tuple[str, ...]]

    @classmethod
    def frame(cls) -> Any:
        raise NotImplementedError

    def build(self) -> dict[str, EnvData]:
        frame = self.frame()
        envs, labels, names, _ = env_and_labels(frame, self.OPTIONS, self.NAME)
        features = feature_columns(frame, self.OPTIONS, self.NAME)
        if names != tuple(self.env_names()) or features != self.FEATURES:
            changed = "the table changed while in use (environments or features)"
            raise UserError(f"{self.NAME}: {changed}; run again")
        x = frame[list(features)].to_numpy(dtype=np.float32)
        if not np.isfinite(x).all():
            row, col = np.argwhere(~np.isfinite(x))[0]
            where = f"feature {features[col]!r}, row {row + 1}"
            raise UserError(f"{self.NAME}: {where} is missing or infinite; fill or drop that row")
        out: dict[str, EnvData] = {}
        for env in names:
            rows = np.flatnonzero(envs == env)
            if self.size == "tiny":
                order = rng(self.NAME, self.data_seed, env, "tiny").permutation(rows)
                rows = np.sort(order[: self.TINY])
            out[env] = EnvData(torch.from_numpy(x[rows]), torch.from_numpy(labels[rows]))
        return out

    def for_run(
        self, envs: Mapping[str, EnvData], test_envs: tuple[str, ...]
    ) -> dict[str, EnvData]:
        """Standardised with the training environments' mean and std: the test env stays unseen."""
        train = torch.cat([env.x for name, env in envs.items() if name not in test_envs])
        mean, std = train.mean(0), train.std(0) if len(train) > 1 else torch.ones(train.shape[1:])
        std = torch.where(torch.isfinite(std) & (std > 0), std, torch.ones_like(std))
        return {n: EnvData((env.x - mean) / std, env.y, env.augment) for n, env in envs.items()}


def table_class(base: type[TableDataset], frame: Any, attrs: dict[str, Any]) -> type[TableDataset]:
    """A TableDataset subclass for ``frame`` (environments, classes and features read from it)."""
    name, options = attrs["NAME"], attrs["OPTIONS"]
    _, _, names, classes = env_and_labels(frame, options, name)
    features = feature_columns(frame, options, name)
    attrs.update(
        {
            "ENVIRONMENTS": tuple(Environment(n) for n in names),
            "CLASSES": classes,
            "NUM_CLASSES": len(classes),
            "FEATURES": features,
            "INPUT_SHAPE": (len(features),),
            "__module__": __name__,
            "__doc__": f"Your table {name}: {len(frame)} rows, {len(features)} features.",
        }
    )
    return type(f"Table_{name}", (base,), attrs)


# --- csv:PATH -----------------------------------------------------------------------------------


def read_csv(path: Path, name: str) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        problem = f"cannot read {path} as CSV ({reason(exc)})"
        raise UserError(f"{name}: {problem}; fix or replace the file") from None


class CsvDataset(TableDataset):
    """A table read from a CSV file (a class made by ``csv:PATH``)."""

    @classmethod
    def frame(cls) -> Any:
        return read_csv(cls.LOCATION, cls.NAME)


def make_csv_dataset(rest: str) -> type[TableDataset]:
    """The dataset class of ``csv:REST`` (see the module docstring)."""
    location, given = parse_name("csv", rest, TABLE_OPTIONS)
    path = local_path("csv", location)
    if not path.is_file():
        raise UserError(f"csv:{location}: {path} is not a file")
    source = with_options(f"csv:{path}", given)
    return once_per_content(source, [path], lambda: _csv_class(path, given, source))


def _csv_class(path: Path, given: dict[str, str], source: str) -> type[TableDataset]:
    name = with_options(f"csv:{path.name}", given)
    attrs = {
        "NAME": name,
        "SOURCE": source,
        "LOCATION": path,
        "OPTIONS": {**TABLE_OPTIONS, **given},
    }
    return table_class(CsvDataset, read_csv(path, name), attrs)


# --- hf:NAME ------------------------------------------------------------------------------------


def load_hf(location: str) -> Any:
    """One Dataset (splits pooled): from a save_to_disk folder, else from the hub (cached)."""
    path = Path(location).expanduser()
    try:
        if path.exists():
            hf = import_hf_datasets(f"hf:{location}")
            loaded = hf.load_from_disk(str(path.resolve()))
        else:  # the package and the hub are checked before the seconds-long import
            hf = hub_datasets(location, "a folder written by save_to_disk, passed as hf:FOLDER")
            loaded = hf.load_dataset(location)
    except UserError:
        raise
    except Exception as exc:  # datasets raises many types (missing files, hub, network, format)
        if not path.exists() and hub_offline():
            raise DataNotFoundError(
                f"hf:{location}: not in the datasets cache, and HF_DATASETS_OFFLINE/HF_HUB_OFFLINE "
                "forbid fetching it: run once with network access (or pass a folder written by "
                f"save_to_disk) ({reason(exc)})"
            ) from None
        raise DataNotFoundError(
            f"hf:{location}: cannot load it ({reason(exc)}); pass a folder written by "
            "save_to_disk or a hub id that is in the cache"
        ) from None
    if isinstance(loaded, hf.DatasetDict):
        loaded = hf.concatenate_datasets(list(loaded.values()))
    return loaded


class HFTableDataset(TableDataset):
    """A table from a ``datasets`` dataset (a class made by ``hf:NAME`` without an image column)."""

    DATASET: ClassVar[str]

    @classmethod
    def frame(cls) -> Any:
        return load_hf(cls.DATASET).to_pandas()


class HFImageDataset(UserImageDataset):
    """Images from a ``datasets`` dataset (a class made by ``hf:NAME`` with an image column)."""

    DATASET: ClassVar[str]
    OPTIONS: ClassVar[dict[str, str]]

    def build(self) -> dict[str, EnvData]:
        loaded = load_hf(self.DATASET)
        frame = loaded.remove_columns(self.OPTIONS["image"]).to_pandas()
        envs, labels, _, _ = env_and_labels(frame, self.OPTIONS, self.NAME)
        out: dict[str, EnvData] = {}
        for env in self.env_names():
            rows = np.flatnonzero(envs == env)
            if self.size == "tiny":
                rows = rows[: self.TINY_PER_CLASS * self.NUM_CLASSES]
            images = loaded.select(rows.tolist())[self.OPTIONS["image"]]
            out[env] = self.env_data(self.pixels(images), labels[rows].tolist())
        return out

    @classmethod
    def pixels(cls, images: list[Any]) -> Tensor:
        """uint8 (n, C, H, W) from PIL images, converted and resized to INPUT_SHAPE."""
        from PIL import Image

        channels, height, width = cls.INPUT_SHAPE
        mode = "L" if channels == 1 else "RGB"
        arrays = []
        for image in images:
            image = image.convert(mode)
            if image.size != (width, height):
                image = image.resize((width, height), Image.LANCZOS)
            arrays.append(np.asarray(image).reshape(height, width, channels))
        return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2).contiguous()


def _image_column(loaded: Any, options: Mapping[str, str], name: str) -> str:
    """The image column asked for, or the first ``datasets.Image`` feature, or '' (a table)."""
    if options["image"]:
        if options["image"] not in loaded.column_names:
            columns = ", ".join(loaded.column_names)
            raise UserError(f"{name}: no image column {options['image']!r}; columns: {columns}")
        return options["image"]
    found = [k for k, f in loaded.features.items() if type(f).__name__ == "Image"]
    return found[0] if found else ""


def make_hf_dataset(rest: str) -> type[UserDataset]:
    """The dataset class of ``hf:REST`` (see the module docstring)."""
    location, given = parse_name("hf", rest, HF_OPTIONS)
    path = Path(location).expanduser()
    local = path.resolve() if path.exists() else None
    source = str(local) if local else location
    key = with_options(f"hf:{source}", given)  # a hub id is read once per process
    return once_per_content(
        key, [local] if local else [], lambda: _hf_class(local, source, given, key)
    )


def _hf_class(
    local: Path | None, source: str, given: dict[str, str], key: str
) -> type[UserDataset]:
    name = with_options(f"hf:{local.name if local else source}", given)
    loaded = load_hf(source)
    options = {**HF_OPTIONS, **given}
    options["image"] = _image_column(loaded, options, name)
    attrs = {
        "NAME": name,
        "SOURCE": key,
        "LOCATION": local,
        "OPTIONS": options,
        "DATASET": source,
    }
    if local is None:  # a hub dataset: its cache files are what the runs read
        files = [Path(f["filename"]) for f in loaded.cache_files]
        attrs["data_paths"] = classmethod(lambda cls, root: list(files))
    if not options["image"]:
        return table_class(HFTableDataset, loaded.to_pandas(), attrs)
    return _hf_image_class(loaded, attrs)


def _hf_image_class(loaded: Any, attrs: dict[str, Any]) -> type[HFImageDataset]:
    name, options = attrs["NAME"], attrs["OPTIONS"]
    frame = loaded.remove_columns(options["image"]).to_pandas()
    _, _, names, classes = env_and_labels(frame, options, name)
    images = loaded[options["image"]]
    sizes, modes = [i.size for i in images], [i.mode for i in images]
    shape = image_geometry(sizes, modes, options["image_size"])
    attrs.update(
        {
            "ENVIRONMENTS": tuple(Environment(n) for n in names),
            "CLASSES": classes,
            "NUM_CLASSES": len(classes),
            "INPUT_SHAPE": shape,
            "__module__": __name__,
            "__doc__": f"Your images {name}: {len(loaded)} rows, {len(classes)} classes.",
        }
    )
    return type(f"HFImages_{name}", (HFImageDataset,), attrs)


DATASETS.register_prefix("csv", make_csv_dataset)
DATASETS.register_prefix("hf", make_hf_dataset)
