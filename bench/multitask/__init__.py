"""Multi-task learning: several tasks trained together, their relatedness and negative transfer.

Layers (each imports only those above it in this list): ``tasks`` (task sets and their
registry), ``method`` (the method contract and registry), ``tasksets/`` and ``methods/`` (the
built-ins), ``spec`` and ``runner`` (one seeded run, bench's run directories), ``sweep``,
``results``, ``affinity`` and ``board`` (reading runs back), ``landscape`` (retrains a run to
map its loss), ``cli``. Nothing outside this
package imports it.
"""

from bench.multitask.method import METHODS, MultiTaskMethod, register_method
from bench.multitask.tasks import TASK_SETS, Task, TaskSet, register_task_set

__all__ = [
    "METHODS",
    "TASK_SETS",
    "MultiTaskMethod",
    "Task",
    "TaskSet",
    "register_method",
    "register_task_set",
]
