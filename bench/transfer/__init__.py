"""Transfer-learning protocols: pretrain on a source (or self-supervised on any data), adapt on a
target.

A transfer *task* is a dataset (registered in ``DATASETS``) whose training
environment is the target and whose test environments are the target's held-out
in-distribution and out-of-distribution splits; it also knows its source. A
*recipe* is an algorithm (registered in ``ALGORITHMS``) that, before training,
loads a pretrained featurizer from a content-addressed cache (``pretrain.py``), so
sweeps, resume, selection and the leaderboard treat transfer runs exactly as DG runs.
"""

# Registration order: the registries' packages import this package's recipe and task
# modules, so load them first; importing bench.transfer.* directly then never sees a
# half-initialised module.
import bench.algorithms  # noqa: E402,F401
import bench.datasets  # noqa: E402,F401
