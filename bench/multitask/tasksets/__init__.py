"""Built-in task sets; importing this package registers them in ``TASK_SETS``."""

from bench.multitask.tasksets import gue, linear, mnist_attributes, teacher  # noqa: F401
