"""Single-task baselines: one network per task, nothing shared (the reference every gain is
measured against). Trained in one process with the mean of the task losses: the tasks'
parameters are disjoint and Adam is per-parameter, so each network trains as it would alone.
"""

from bench.multitask.method import PerTaskNetworks, register_method


@register_method("single_task")
class SingleTask(PerTaskNetworks):
    VERSION = 1
