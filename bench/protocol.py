"""Protocol cards: what a dataset's runs were trained and judged with, in one record.

A card is derived from a run's resolved spec and its dataset's declarations (REFERENCE,
SELECTION, METRIC), written into every run's spec.json and printed at the top of each
dataset's section of a board, so a reader sees at once which protocol the numbers
belong to and which published protocol they may be compared with.
"""

from __future__ import annotations

from typing import Any, Mapping

from bench.datasets import DATASETS


def protocol_card(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The card of one run (``spec`` as in spec.json: fields plus resolved ``hparams``)."""
    ds = DATASETS.get(spec["dataset"])
    hp = spec["hparams"]
    augment = hp.get("augment", "revcomp" if hp.get("revcomp") else "none")
    return {
        "task": task_label(spec.get("uda_fraction", 0.0)),
        "reference": ds.REFERENCE,
        "network": hp.get("featurizer"),
        "input": "x".join(str(d) for d in ds.INPUT_SHAPE),
        "init": hp.get("weights", hp.get("init", "default")),
        "steps": spec["steps"],
        "eval_every": spec["eval_every"],
        "batch_size": "full environment" if hp.get("batch_size") == 0 else hp.get("batch_size"),
        "augmentation": "none" if augment is False else augment,
        "holdout": spec["holdout_fraction"],
        "selection": list(ds.SELECTION),
        "metric": ds.METRIC,
        "size": spec["size"],
        "precision": spec["precision"],
    }


def task_label(uda_fraction: float) -> str:
    """DG, or UDA with the share of each test environment trained on unlabeled."""
    if not uda_fraction:
        return "DG"
    return f"UDA ({uda_fraction:g} of each test environment unlabeled in training)"


FIELDS = (
    "task",
    "reference",
    "network",
    "input",
    "init",
    "steps",
    "eval_every",
    "batch_size",
    "augmentation",
    "holdout",
    "selection",
    "metric",
    "size",
    "precision",
)


def render_card(card: Mapping[str, Any]) -> str:
    """One markdown line, fields in a fixed order, for the top of a board's dataset section."""

    def text(value: Any) -> str:
        return ", ".join(map(str, value)) if isinstance(value, list) else str(value)

    parts = [f"{k.replace('_', ' ')} {text(card[k])}" for k in FIELDS if k in card]
    return "**Protocol**: " + "; ".join(parts) + "."
