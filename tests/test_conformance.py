"""Conformance: every claim of "DomainBed's defaults and search space" checked against DomainBed's
own registry.

The facts below are literals transcribed from DomainBed's ``domainbed/hparams_registry.py``
(facebookresearch/DomainBed) and ``domainbed/datasets.py`` (CHECKPOINT_FREQ, N_STEPS), not
read back from bench. A change that drifts from them fails here unless it is declared in
DEVIATIONS or BENCH_ONLY with its reason.
"""

from __future__ import annotations

import math

import pytest

from bench.algorithms import ALGORITHMS
from bench.datasets import DATASETS
from bench.hparams import (
    Choice,
    Fixed,
    IntLogUniform,
    IntUniform,
    LogUniform,
    Param,
    Setting,
    Uniform,
    space_for,
)

# (default, distribution); distributions: ("fixed",), ("choice", options), ("10^U", lo, hi),
# ("int(10^U)", lo, hi), ("int(2^U)", lo, hi), ("U", lo, hi), ("int(U)", lo, hi)
# batch B (issue 17): DomainBed's ``elif algorithm == ...`` blocks for these algorithms. A
# one-option ``r.choice([v])`` is written ("fixed",). ARM has no algorithm keys.
BATCH_B = {
    "mldg": {
        "mldg_beta": (1.0, ("10^U", -1, 1)),
        "n_meta_test": (2, ("choice", (1, 2))),
    },
    "mtl": {"mtl_ema": (0.99, ("choice", (0.5, 0.9, 0.99, 1.0)))},
    "sagnet": {"sag_w_adv": (0.1, ("10^U", -2, 1))},
    "arm": {},
    "rsc": {
        "rsc_f_drop_factor": (1 / 3, ("U", 0, 0.5)),
        "rsc_b_drop_factor": (1 / 3, ("U", 0, 0.5)),
    },
    "trm": {
        "cos_lambda": (1e-4, ("10^U", -5, 0)),
        "iters": (200, ("int(10^U)", 0, 4)),
        "groupdro_eta": (1e-2, ("10^U", -3, -1)),
    },
    "transfer_dg": {
        "t_lambda": (1.0, ("10^U", -2, 1)),
        "delta": (2.0, ("U", 0.1, 3.0)),
        "d_steps_per_g": (10, ("choice", (1, 2, 5))),
        "weight_decay_d": (0.0, ("10^U", -6, -2)),
        "gda": (False, ("always", True)),
        "beta1": (0.5, ("choice", (0.0, 0.5))),
        "lr_d": (1e-3, ("10^U", -4.5, -2.5)),
    },
    "adrmx": {
        "cnt_lambda": (1.0, ("fixed",)),
        "dclf_lambda": (1.0, ("fixed",)),
        "disc_lambda": (0.75, ("fixed",)),
        "rmxd_lambda": (1.0, ("fixed",)),
        "d_steps_per_g_step": (2, ("fixed",)),
        "beta1": (0.5, ("fixed",)),
        "mlp_width": (256, ("fixed",)),
        "mlp_depth": (9, ("choice", (8, 9, 10))),
        "mlp_dropout": (0.0, ("fixed",)),
    },
    "urm": {
        "urm": ("adversarial", ("fixed",)),
        "urm_adv_lambda": (0.1, ("U", 0, 0.2)),
        "urm_discriminator_label_smoothing": (0, ("fixed",)),
        "urm_discriminator_optimizer": ("adam", ("fixed",)),
        "urm_discriminator_hidden_layers": (1, ("choice", (1, 2, 3))),
        "urm_generator_output": ("tanh", ("choice", ("tanh", "relu"))),
    },
    "erm_pp": {
        "linear_lr": (5e-5, ("10^U", -5, -3.5)),
        "linear_steps": (500, ("fixed",)),  # a global key in DomainBed, read only by ERM++
    },
}
# The same algorithms' keys that differ between DomainBed's small and large images.
BATCH_B_SMALL = {
    "adrmx": {"lr": (3e-3, ("choice", (5e-4, 1e-3, 2e-3, 3e-3)))},
    "urm": {"urm_discriminator_lr": (1e-3, ("10^U", -5.5, -3.5))},
}
BATCH_B_LARGE = {
    "adrmx": {"lr": (3e-5, ("choice", (2e-5, 3e-5, 4e-5, 5e-5)))},
    "urm": {"urm_discriminator_lr": (5e-5, ("10^U", -6, -4.5))},
    "arm": {"batch_size": (8, ("fixed",))},
}
# Declared deviations: DomainBed's fact -> bench's value (None: bench has no such key), reason.
BATCH_B_DEVIATIONS = {
    ("transfer_dg", "gda"): (
        None,
        "its random value True gives the optimiser only the adversarial head: nothing else trains",
    ),
    ("transfer_dg", "weight_decay_d"): (None, "declared but never read by DomainBed's Transfer"),
    ("transfer_dg", "beta1"): (None, "declared but never read by DomainBed's Transfer"),
    ("urm", "urm"): (None, "declared but never read by DomainBed's URM"),
    ("adrmx", "nonlinear_classifier"): (
        (True, ("fixed",)),
        "DomainBed's ADRMX ignores the global False and always builds 3-layer heads",
    ),
}

DOMAINBED_ALGORITHM = {
    "erm": {},
    "irm": {
        "irm_lambda": (1e2, ("10^U", -1, 5)),
        "irm_penalty_anneal_iters": (500, ("int(10^U)", 0, 4)),
    },
    "vrex": {
        "vrex_lambda": (1e1, ("10^U", -1, 5)),
        "vrex_penalty_anneal_iters": (500, ("int(10^U)", 0, 4)),
    },
    "fish": {"meta_lr": (0.5, ("choice", (0.05, 0.1, 0.5)))},
    "fishr": {
        "lambda": (1000.0, ("10^U", 1, 4)),
        "penalty_anneal_iters": (1500, ("int(U)", 0, 5000)),
        "ema": (0.95, ("U", 0.9, 0.99)),
    },
    "coral": {"mmd_gamma": (1.0, ("10^U", -1, 1))},
    "mmd": {"mmd_gamma": (1.0, ("10^U", -1, 1))},
    "group_dro": {"groupdro_eta": (1e-2, ("10^U", -3, -1))},
    "mixup": {"mixup_alpha": (0.2, ("10^U", -1, 1))},
    "sd": {"sd_reg": (0.1, ("10^U", -5, -1))},
    **{
        name: {
            "lambda": (1.0, ("10^U", -2, 2)),
            "weight_decay_d": (0.0, ("10^U", -6, -2)),
            "d_steps_per_g_step": (1, ("int(2^U)", 0, 3)),
            "grad_penalty": (0.0, ("10^U", -2, 1)),
            "beta1": (0.5, ("choice", (0.0, 0.5))),
            "mlp_width": (256, ("int(2^U)", 6, 10)),
            "mlp_depth": (3, ("choice", (3, 4, 5))),
            "mlp_dropout": (0.0, ("choice", (0.0, 0.1, 0.5))),
        }
        for name in ("dann", "cdann")
    },
    # batch A (issue 17)
    "and_mask": {"tau": (1.0, ("U", 0.5, 1.0))},
    "sand_mask": {"tau": (1.0, ("U", 0.0, 1.0)), "k": (10.0, ("10^U", -3, 5))},
    "iga": {"penalty": (1000.0, ("10^U", 1, 5))},
    "self_reg": {},
    **{
        name: {
            "lmbda": (0.1, ("choice", (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 1e1, 1e2))),
            "temperature": (0.1, ("choice", (0.05, 0.1))),
            "is_normalized": (False, ("fixed",)),
            "is_project": (False, ("fixed",)),
            "is_flipped": (True, ("fixed",)),
        }
        for name in ("cad", "cond_cad")
    },
    "ib_erm": {
        "ib_lambda": (1e2, ("10^U", -1, 5)),
        "ib_penalty_anneal_iters": (500, ("int(10^U)", 0, 4)),
    },
    "ib_irm": {
        "irm_lambda": (1e2, ("10^U", -1, 5)),
        "irm_penalty_anneal_iters": (500, ("int(10^U)", 0, 4)),
        "ib_lambda": (1e2, ("10^U", -1, 5)),
        "ib_penalty_anneal_iters": (500, ("int(10^U)", 0, 4)),
    },
    "causirl_coral": {"mmd_gamma": (1.0, ("10^U", -1, 1))},
    "causirl_mmd": {"mmd_gamma": (1.0, ("10^U", -1, 1))},
    "eqrm": {
        "eqrm_quantile": (0.75, ("U", 0.5, 0.99)),
        # DomainBed draws a float 10^U(2.5, 3.5); bench an int (deviation named in eqrm.py)
        "eqrm_burnin_iters": (2500, ("int(10^U)", 2.5, 3.5)),
        "eqrm_lr": (1e-6, ("10^U", -7, -5)),
    },
    "rdm": {
        "rdm_lambda": (5.0, ("U", 0.1, 10.0)),
        "rdm_penalty_anneal_iters": (1500, ("int(U)", 800, 2700)),
        "variance_weight": (0.004, ("U", 0.001, 0.007)),
        "rdm_lr": (1.5e-5, ("U", 8e-6, 2e-5)),
    },
    **BATCH_B,  # batch B (issue 17), above
}
# batch A (issue 17): DomainBed's RDM differs per large-image dataset (batch size included)
_RDM_PACS = {"rdm_lambda": (5.0, ("U", 1.0, 10.0)), "batch_size": (88, ("int(U)", 70, 100))}
_RDM_NO_VARIANCE = {"variance_weight": (0.0, ("fixed",))}  # DomainBed: choice([0.0])
_RDM_TERRA = {**_RDM_PACS, **_RDM_NO_VARIANCE, "batch_size": (40, ("int(U)", 30, 60))}
DOMAINBED_ALGORITHM_ON_DATASET = {
    ("rdm", "pacs_domainbed"): _RDM_PACS,
    ("rdm", "vlcs_domainbed"): {"batch_size": (88, ("int(U)", 70, 100))},
    ("rdm", "office_home_domainbed"): {
        **_RDM_NO_VARIANCE,
        "batch_size": (88, ("int(U)", 70, 100)),
    },
    ("rdm", "terra_incognita_domainbed"): _RDM_TERRA,
    ("rdm", "domain_net_domainbed"): {
        **_RDM_TERRA,
        "rdm_lambda": (0.5, ("U", 0.1, 1.0)),
        "rdm_penalty_anneal_iters": (2400, ("int(U)", 1500, 3000)),
    },
}
SMALL = {
    "lr": (1e-3, ("10^U", -4.5, -2.5)),
    "weight_decay": (0.0, ("fixed",)),
    "batch_size": (64, ("int(2^U)", 3, 9)),
    "nonlinear_classifier": (False, ("fixed",)),
}
SMALL_DANN = {
    "lr_d": (1e-3, ("10^U", -4.5, -2.5)),
    "lr_g": (1e-3, ("10^U", -4.5, -2.5)),
    "weight_decay_g": (0.0, ("fixed",)),
}
LARGE = {
    "lr": (5e-5, ("10^U", -5, -3.5)),
    "weight_decay": (0.0, ("10^U", -6, -2)),
    "batch_size": (32, ("int(2^U)", 3, 5.5)),
    "resnet_dropout": (0.0, ("choice", (0.0, 0.1, 0.5))),
    "nonlinear_classifier": (False, ("fixed",)),
}
LARGE_DANN = {
    "lr_d": (5e-5, ("10^U", -5, -3.5)),
    "lr_g": (5e-5, ("10^U", -5, -3.5)),
    "weight_decay_g": (0.0, ("10^U", -6, -2)),
}
DOMAINNET = {**LARGE, "batch_size": (32, ("int(2^U)", 3, 5))}
DOMAINBED_DATASETS = {
    "cmnist": SMALL,
    "rmnist": SMALL,
    "pacs_domainbed": LARGE,
    "vlcs_domainbed": LARGE,
    "office_home_domainbed": LARGE,
    "terra_incognita_domainbed": LARGE,
    "domain_net_domainbed": DOMAINNET,
}
# datasets.py: CHECKPOINT_FREQ (evaluation cadence) and N_STEPS (5001 for every dataset)
DOMAINBED_CADENCE = {
    "cmnist": 100,
    "rmnist": 100,
    "pacs_domainbed": 300,
    "vlcs_domainbed": 300,
    "office_home_domainbed": 300,
    "terra_incognita_domainbed": 300,
    "domain_net_domainbed": 1000,
}

# Same quantity, bench's name (DomainBed's DANN generator is bench's main network).
RENAMED = {
    "mlp_width": "d_mlp_width",
    "mlp_depth": "d_mlp_depth",
    "mlp_dropout": "d_mlp_dropout",
    "lr_g": "lr",
    "weight_decay_g": "weight_decay",
}
# Keys DomainBed does not have: each must be fixed (never searched), with the reason.
BENCH_ONLY = {
    "l2": "the IRM paper's explicit L2 regulariser; 0 = off, as DomainBed",
    "irm_code": "the IRM paper's penalty schedule; False = DomainBed's",
    "vrex_penalty": "the Fishr code's (R0 - R1)^2; 'variance' = DomainBed's",
    "init": "weight init; 'default' = DomainBed's (torch's)",
    "featurizer": "the network; DomainBed picks it by dataset too",
    "weights": "ResNet start weights; 'imagenet' = DomainBed's",
    "freeze_bn": "DomainBed's ResNet always freezes BatchNorm; True on its protocol",
    "augment": "DomainBed's data_augmentation is True and not searched",
}
PROTOCOL_VALUES = {
    "weights": "imagenet",
    "freeze_bn": True,
    "augment": "domainbed",
    "featurizer": "resnet50",
}


def canonical(param: Param) -> tuple:
    """A bench Param in the notation of the tables above."""
    if isinstance(param, (Fixed, Setting)) or type(param) is Param:
        return ("fixed",)
    if isinstance(param, Choice):
        return ("choice", tuple(param.options))
    if isinstance(param, LogUniform):
        base = {10.0: "10", 2.0: "2"}[param.base]
        kind = f"int({base}^U)" if isinstance(param, IntLogUniform) else f"{base}^U"
        return (
            kind,
            round(math.log(param.low, param.base), 6),
            round(math.log(param.high, param.base), 6),
        )
    if isinstance(param, Uniform):
        return ("int(U)" if isinstance(param, IntUniform) else "U", param.low, param.high)
    raise TypeError(param)


def _expected(algorithm: str, dataset: str) -> dict[str, tuple]:
    table = {**DOMAINBED_DATASETS[dataset], **DOMAINBED_ALGORITHM[algorithm]}
    if algorithm in ("dann", "cdann"):
        table |= SMALL_DANN if DOMAINBED_DATASETS[dataset] is SMALL else LARGE_DANN
    table |= DOMAINBED_ALGORITHM_ON_DATASET.get((algorithm, dataset), {})
    small = DOMAINBED_DATASETS[dataset] is SMALL
    table |= (BATCH_B_SMALL if small else BATCH_B_LARGE).get(algorithm, {})
    for (name, key), (bench_value, _) in BATCH_B_DEVIATIONS.items():
        if name == algorithm and bench_value is None:
            del table[key]
        elif name == algorithm:
            table[key] = bench_value
    return {RENAMED.get(k, k): v for k, v in table.items()}


@pytest.mark.parametrize("dataset", list(DOMAINBED_DATASETS))
@pytest.mark.parametrize("algorithm", list(DOMAINBED_ALGORITHM))
def test_search_space_matches_domainbeds_registry(algorithm, dataset):
    space = space_for(ALGORITHMS.get(algorithm), DATASETS.get(dataset))
    expected = _expected(algorithm, dataset)
    for key, (default, distribution) in expected.items():
        assert key in space, f"{algorithm}/{dataset}: DomainBed's {key} is missing"
        param = space[key]
        assert (
            param.default == pytest.approx(default)
            if isinstance(default, float)
            else param.default == default
        ), key
        got = canonical(param)
        assert (
            got[0] == distribution[0] and got[1:] == pytest.approx(distribution[1:])
            if got[0] != "choice"
            else got == distribution
        ), f"{algorithm}/{dataset} {key}: {got} != DomainBed's {distribution}"
    for key in set(space) - set(expected):
        if key.startswith(("cnn_", "mlp_", "seq_")) and DOMAINBED_DATASETS[dataset] is SMALL:
            continue  # not reached: the MNIST CNN has no such keys
        assert key in BENCH_ONLY, (
            f"{algorithm}/{dataset}: {key} is not in DomainBed; declare it in BENCH_ONLY "
            "with the reason"
        )
        assert canonical(space[key]) == ("fixed",), (
            f"{key} must not be searched: DomainBed does not search it"
        )
        if "_domainbed" in dataset and key in PROTOCOL_VALUES:
            assert space[key].default == PROTOCOL_VALUES[key], key


@pytest.mark.parametrize("dataset", list(DOMAINBED_CADENCE))
def test_cadence_and_steps_match_domainbeds_datasets(dataset):
    cls = DATASETS.get(dataset)
    assert (cls.EVAL_EVERY, cls.N_STEPS) == (DOMAINBED_CADENCE[dataset], 5001)


def test_domainbed_image_protocol_is_resnet50_at_224_px_and_the_cpu_protocol_is_not():
    db, cpu = DATASETS.get("pacs_domainbed"), DATASETS.get("pacs")
    assert (db.FEATURIZER, db.INPUT_SHAPE, db.IMAGE_SIZE) == ("resnet50", (3, 224, 224), 224)
    assert (cpu.FEATURIZER, cpu.INPUT_SHAPE, cpu.EVAL_EVERY) == ("small_cnn", (3, 64, 64), 100)
    cpu_space = space_for(ALGORITHMS.get("erm"), cpu)
    assert canonical(cpu_space["augment"]) == (
        "fixed",
    )  # augmentation is a protocol choice, never searched
    assert canonical(cpu_space["batch_size"])[0] == "int(2^U)" and canonical(
        cpu_space["batch_size"]
    )[1:] == pytest.approx((3, 5.5))


def test_resnet_freeze_bn_keeps_batchnorm_in_eval_mode_while_training():
    from bench.networks import ResNet

    frozen, free = (
        ResNet((3, 32, 32), 18, "none", 0.0, freeze_bn=True),
        ResNet((3, 32, 32), 18, "none", 0.0),
    )
    frozen.train(), free.train()
    bns = [m for m in frozen.modules() if m.__class__.__name__ == "BatchNorm2d"]
    assert bns and not any(m.training for m in bns) and frozen.training
    assert all(m.training for m in free.modules() if m.__class__.__name__ == "BatchNorm2d")


@pytest.mark.slow
def test_domainbed_image_protocol_smoke_run(tmp_path):
    """One ResNet-50 step at 224 px on the tiny PACS copy (ImageNet weights are not available
    offline: none)."""
    from bench import cli

    argv = [
        "run",
        "--algorithm",
        "erm",
        "--dataset",
        "pacs_domainbed",
        "--size",
        "tiny",
        "--steps",
        "1",
        "--weights",
        "none",
        "--hparams",
        '{"batch_size": 2}',
        "--output-dir",
        str(tmp_path),
        "--no-progress",
        "--threads",
        "2",
    ]
    if "pacs" not in {p.name for p in DATASETS.get("pacs").data_paths(None)}:
        pytest.skip("no PACS copy")
    assert cli.main(argv) == 0


# batch A (issue 17)
@pytest.mark.parametrize(
    "dataset", ["pacs", "vlcs", "office_home", "terra_incognita", "domain_net"]
)
def test_rdm_uses_domainbeds_per_dataset_space_in_the_cpu_protocol_too(dataset):
    """RDM's registry entries depend on the dataset, not the network: bench's 64-px twin of a
    DomainBed image dataset resolves the same RDM keys and batch size as the ResNet-50 one."""
    rdm = ALGORITHMS.get("rdm")
    cpu, domainbed = (space_for(rdm, DATASETS.get(n)) for n in (dataset, f"{dataset}_domainbed"))
    for key in (
        "rdm_lambda",
        "rdm_penalty_anneal_iters",
        "variance_weight",
        "rdm_lr",
        "batch_size",
    ):
        assert canonical(cpu[key]) == canonical(domainbed[key]), key
        assert cpu[key].default == domainbed[key].default, key
