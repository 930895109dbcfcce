"""Published numbers shown beside ours, each with the protocol it was trained under.

A row is printed only on a board whose every run matches that protocol (spec fields or
hparams); otherwise the board names the difference instead (``published_rows``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from bench.selection import Run


@dataclass(frozen=True)
class Reference:
    """A published number, shown as a row marked ``(published: source)`` under our own rows.

    ``protocol`` holds what the published number was trained with (spec fields or hparams);
    the row is shown only when every run of the board matches it, else the board names
    the difference instead of printing a number that is not comparable.
    """

    dataset: str
    rule: str
    algorithm: str
    cells: Mapping[str, str]
    source: str
    protocol: Mapping[str, Any] = field(default_factory=dict)


_IRM = "Arjovsky et al. 2019 (IRM), Table 1, 10 restarts, ± std(ddof=0)"
_FISHR = (
    "Rame et al. 2022 (Fishr), Table 2 (Sec. 6.A), every method at IRM-tuned hparams, 10 "
    "restarts, ± std(ddof=0)"
)
_DB = "Gulrajani & Lopez-Paz 2021 (DomainBed); ± there is std(ddof=0)/sqrt(n)"
_IRM_RUN = {"steps": 501, "size": "full"}
_DB_CMNIST = {"steps": 5001, "eval_every": 100, "size": "full"}
_DB_PACS = {"size": "full", "featurizer": "resnet50", "weights": "imagenet", "eval_every": 300}
REFERENCES: tuple[Reference, ...] = (
    Reference(
        "cmnist_irm",
        "last",
        "ERM",
        {"train envs": "87.4 ± 0.2", "test": "17.1 ± 0.6"},
        _IRM,
        _IRM_RUN,
    ),
    Reference(
        "cmnist_irm",
        "last",
        "IRM",
        {"train envs": "70.8 ± 0.9", "test": "66.9 ± 2.5"},
        _IRM,
        _IRM_RUN,
    ),
    Reference(
        "cmnist_irm_gray",
        "last",
        "ERM grayscale (oracle)",
        {"train envs": "73.5 ± 0.2", "test": "73.0 ± 0.4"},
        _IRM,
        {"steps": 101, "size": "full"},
    ),
    *(
        Reference(
            d, "last", "V-REx", {"train envs": "71.7 ± 1.5", "test": "67.2 ± 1.5"}, _FISHR, _IRM_RUN
        )
        for d in ("cmnist_irm", "cmnist_fishr")
    ),
    *(
        Reference(
            d, "last", "Fishr", {"train envs": "71.0 ± 0.9", "test": "69.5 ± 1.0"}, _FISHR, _IRM_RUN
        )
        for d in ("cmnist_irm", "cmnist_fishr")
    ),
    Reference(
        "cmnist_fishr",
        "last",
        "ERM",
        {"train envs": "86.4 ± 0.2", "test": "14.0 ± 0.7"},
        _FISHR,
        _IRM_RUN,
    ),
    Reference(
        "cmnist_fishr",
        "last",
        "IRM",
        {"train envs": "71.0 ± 0.5", "test": "65.6 ± 1.8"},
        _FISHR,
        _IRM_RUN,
    ),
    Reference(
        "cmnist",
        "train_val",
        "ERM",
        {"+90%": "71.7", "+80%": "72.9", "-90%": "10.0", "Avg": "51.5"},
        _DB,
        _DB_CMNIST,
    ),
    *(
        Reference("cmnist", "train_val", a, {"Avg": v}, _DB, _DB_CMNIST)
        for a, v in (
            ("IRM", "52.0"),
            ("VREx", "51.8"),
            ("CORAL", "51.5"),
            ("DANN", "51.5"),
            ("GroupDRO", "52.1"),
            ("MMD", "51.5"),
        )
    ),
    Reference(
        "cmnist",
        "train_val",
        "Mixup",
        {"Avg": "52.1"},
        _DB + "; mixup_alpha was 0.1 for every sample there (a registry bug fixed in 2023; "
        "bench searches 10^U(-1, 1))",
        _DB_CMNIST,
    ),
    *(
        Reference("cmnist", "oracle", a, {"-90%": t, "Avg": v}, _DB, _DB_CMNIST)
        for a, t, v in (("ERM", "28.7", "57.8"), ("IRM", "58.5", "67.7"), ("VREx", "55.2", "67.0"))
    ),
    Reference(
        "cmnist",
        "oracle",
        "Fishr",
        {"Avg": "68.8 ± 1.4"},
        "Rame et al. 2022 (Fishr), DomainBed protocol",
        _DB_CMNIST,
    ),
    *(
        Reference(
            "pacs_domainbed",
            "train_val",
            a,
            {"Avg": v},
            "Gulrajani & Lopez-Paz 2021 (DomainBed), ResNet-50 ImageNet",
            _DB_PACS,
        )
        for a, v in (("ERM", "85.5"), ("CORAL", "86.2"), ("IRM", "83.5"), ("DANN", "83.6"))
    ),
)


def protocol_differences(ref: Reference, runs: Sequence[Run]) -> list[str]:
    """``key: published vs ours`` for every protocol field where some run differs from the
    reference."""
    out = []
    for key, value in ref.protocol.items():
        ours = sorted({str(r.spec.get(key, r.hparams.get(key))) for r in runs})
        if ours != [str(value)]:
            out.append(f"{key} {value} vs {'/'.join(ours)}")
    return out


def published_rows(
    dataset: str, rule: str, headers: list[str], runs: Sequence[Run]
) -> tuple[list[list[str]], list[str]]:
    """Rows of the comparable published references, and one note per source that is not
    comparable."""
    rows, notes = [], {}
    for ref in REFERENCES:
        if ref.dataset != dataset or ref.rule != rule or not set(ref.cells) & set(headers):
            continue
        differences = protocol_differences(ref, runs)
        if differences:
            notes[ref.source] = (
                f"Published rows of {ref.source} not shown: their protocol differs "
                f"({'; '.join(differences)})."
            )
        else:
            rows.append(_reference_row(ref, headers))
    return rows, list(notes.values())


def _reference_row(ref: Reference, headers: list[str]) -> list[str]:
    return [
        f"{ref.algorithm} (published: {ref.source})",
        *(ref.cells.get(h, "") for h in headers[1:]),
    ]
