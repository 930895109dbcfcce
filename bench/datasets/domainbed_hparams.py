"""DomainBed's registry entries for one algorithm on one dataset (``ALGORITHM_HPARAMS``).

``hparams_registry.py`` gives RDM its own defaults and ranges on each large-image dataset,
its batch size included. Each image-folder dataset declares these as its
``ALGORITHM_HPARAMS``; its ``<name>_domainbed`` twin inherits them, so the CPU protocol runs
RDM at DomainBed's settings for that dataset too. A few algorithms differ by image size only
in keys that are theirs alone to set apart (ADRMX's lr, ARM's batch size, URM's and
Transfer's discriminator lr): ``LARGE_IMAGES``, taken by the ``<name>_domainbed`` protocols
only (every other algorithm's size difference is ``HPARAM_OVERRIDES``).
"""

from __future__ import annotations

from bench.hparams import Choice, Fixed, IntUniform, LogUniform, Param, Uniform

_LAMBDA = "weight of the MMD between worst and pooled risk distributions"


def _batch(default: int, low: int, high: int) -> Param:
    return IntUniform(default, "images per domain per step (DomainBed's RDM)", low=low, high=high)


_RDM_LARGE = {"batch_size": _batch(88, 70, 100)}  # every large-image dataset but the two below
_RDM_PACS = {**_RDM_LARGE, "rdm_lambda": Uniform(5.0, _LAMBDA, low=1.0, high=10.0)}
_RDM_NO_VARIANCE = {"variance_weight": Fixed(0.0, "DomainBed: no variance term on this dataset")}
_RDM_TERRA = {**_RDM_PACS, **_RDM_NO_VARIANCE, "batch_size": _batch(40, 30, 60)}
RDM: dict[str, dict[str, Param]] = {
    "pacs": _RDM_PACS,
    "vlcs": _RDM_LARGE,
    "office_home": {**_RDM_LARGE, **_RDM_NO_VARIANCE},
    "terra_incognita": _RDM_TERRA,
    "domain_net": {
        **_RDM_TERRA,
        "rdm_lambda": Uniform(0.5, _LAMBDA, low=0.1, high=1.0),
        "rdm_penalty_anneal_iters": IntUniform(
            2400, "steps before the penalties switch on", low=1500, high=3000
        ),
    },
}


# Issue 17, batch B: algorithms whose own keys (or lr, batch size) DomainBed sets apart on its
# large images (``else`` of ``dataset in SMALL_IMAGES``); their small-image values are the
# algorithms' defaults. Only the ``<name>_domainbed`` protocols take these.
LARGE_IMAGES: dict[str, dict[str, Param]] = {
    "adrmx": {
        "lr": Choice(
            3e-5, "Adam lr (DomainBed's ADRMX, large images)", options=(2e-5, 3e-5, 4e-5, 5e-5)
        )
    },
    "arm": {"batch_size": Fixed(8, "DomainBed: ARM's support size on large images")},
    "urm": {
        "urm_discriminator_lr": LogUniform(
            5e-5, "discriminator lr (DomainBed's URM, large images)", low=1e-6, high=10**-4.5
        )
    },
    # DomainBed's Transfer keeps its lr_d range on large images (DANN's lr_d drops there)
    "transfer_dg": {
        "lr_d": LogUniform(
            1e-3, "adversarial head SGD lr (DomainBed's Transfer)", low=10**-4.5, high=10**-2.5
        )
    },
}


def algorithm_hparams(dataset: str) -> dict[str, dict[str, Param]]:
    """``ALGORITHM_HPARAMS`` of the DomainBed image dataset ``dataset`` (its CPU name)."""
    return {"rdm": RDM[dataset]}
