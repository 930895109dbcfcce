"""Built-in multi-task methods; importing this package registers them in ``METHODS``."""

from bench.multitask.methods import (  # noqa: F401
    evgeniou_pontil,
    hard_sharing,
    pcgrad,
    pretrain_finetune,
    single_task,
    soft_sharing,
    uncertainty_weighting,
)
