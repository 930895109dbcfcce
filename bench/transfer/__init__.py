"""Transfer-learning protocols: pretrain on a source (or self-supervised on any data), adapt on a
target.

A transfer *task* is a dataset (registered in ``DATASETS``) whose training
environment is the target and whose test environments are the target's held-out
in-distribution and out-of-distribution splits; it also knows its source. A
*recipe* is an algorithm (registered in ``ALGORITHMS``) that, before training,
loads a pretrained featurizer from a content-addressed cache (``pretrain.py``), so
sweeps, resume, selection and the leaderboard treat transfer runs exactly as DG runs.

This package sits above ``bench.algorithms`` and ``bench.datasets`` and imports them; they
never import it. The runner hands a recipe its data through ``Algorithm.prepare_run``
(``bench.run_data.RunData``). The built-in tasks and recipes (``builtin_tasks``,
``builtin_recipes``) register with the registries' first lookup, through ``bench.builtins``.
"""
