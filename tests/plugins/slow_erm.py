"""A test plugin loaded with ``--import tests.plugins.slow_erm``: ERM that sleeps, so a test can
kill it mid-run,
and ERM that reports a non-finite loss at step 3, to test divergence handling."""

import time

from bench.algorithms import register_algorithm
from bench.algorithms.erm import ERM


@register_algorithm("slow_erm")
class SlowERM(ERM):
    VERSION = 1

    def update(self, minibatches, unlabeled=None):
        time.sleep(0.02)
        return super().update(minibatches, unlabeled)


@register_algorithm("nan_erm")
class NaNERM(ERM):
    VERSION = 1

    def update(self, minibatches, unlabeled=None):
        stats = super().update(minibatches, unlabeled)
        if int(self.step) >= 3:
            stats["loss"] = float("nan")
        return stats
