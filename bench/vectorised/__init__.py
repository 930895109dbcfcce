"""Train a group of small runs as one unit, with records identical to training them one by one.

Runs that share every shape (algorithm, dataset, test environments, steps, cadence and every
hyperparameter but ``lr``, ``weight_decay`` and the algorithm's own ``PER_RUN`` ones; they
may differ in trial seed and hparams sample) are each prepared by ``runner.prepare`` as
usual: own data, splits, minibatch streams, seeded initialisation, optimiser and record
files. Training then stacks the members' weights along a leading dimension and takes every
member's step in one sequence of batched operations: the forward pass, the loss and its
diagnostics, the backward pass and Adam. One-by-one training is overhead-bound on a tiny
model (hundreds of operator calls of microseconds each per step); batched, those calls are
shared by the group.

- ``grouping``: which runs train together (``group_key``, ``units``);
- ``erm``: ``BatchedERM``, ERM's update and the engine the others extend; ``vrex`` and
  ``group_dro`` change only the objective on the environments' risks; ``irm`` differentiates
  its penalty (a gradient itself) with autograd, and ``features`` the objectives on each
  environment's features and the head (``fishr``, ``coral_mmd``, ``ib_erm``), batched where
  probes show that equal to one graph per member (``algorithms`` lists them in ``BATCHED``);
- ``eligible``: which runs' networks and optimisers the engine can train;
- ``products``: matrix products equal to each run's own;
- ``data``: a step's stacked minibatches and a batched evaluation;
- ``train``: ``run_group`` (the local launcher's unit of work) and ``time_group`` (the plan's).

Identity is bitwise, not approximate: each batched operation computes every member's slice
with the arithmetic of the unbatched one. The backward pass is written out with the kernels
autograd runs for one run, in the layout its formulas use. Matrix products go through
``products.Products``: ``bmm`` where, for that layout, it equals each run's own ``mm`` on
every random probe, else member by member on aligned operands. Adam's formulas take
per-member scalars. Before a group starts, ``train._same_first_step`` trains copies of its
members one step both ways and compares every number (statistics, weights, optimiser state);
on any difference the group trains one by one with one warning. The first batched evaluation
is checked against each member's own the same way. At every record step the members' modules
and Adam states are written back from the stacks, so records and checkpoints are the
runner's own (a checkpoint resumes one by one); they are composed by the group and written to
disk by a thread per member while the group trains on. Specs without a shared shape, resumed runs
and non-CPU devices train one by one.
"""

from bench.vectorised.algorithms import BATCHED
from bench.vectorised.erm import BatchedERM
from bench.vectorised.grouping import MAX_GROUP, describe_units, group_key, units
from bench.vectorised.train import run_group, time_group

__all__ = [
    "BATCHED",
    "MAX_GROUP",
    "BatchedERM",
    "describe_units",
    "group_key",
    "run_group",
    "time_group",
    "units",
]
