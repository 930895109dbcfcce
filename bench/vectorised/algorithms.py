"""The algorithms whose update trains batched, and the class that does it."""

from __future__ import annotations

from bench.vectorised.coral_mmd import BatchedFeatureMatching
from bench.vectorised.erm import BatchedERM
from bench.vectorised.fishr import BatchedFishr
from bench.vectorised.group_dro import BatchedGroupDRO
from bench.vectorised.ib_erm import BatchedIBERM
from bench.vectorised.irm import BatchedIRM
from bench.vectorised.sd import BatchedSD
from bench.vectorised.vrex import BatchedVREx

# The algorithms whose update trains batched, and the class that does it.
BATCHED: dict[str, type[BatchedERM]] = {
    "erm": BatchedERM,
    "irm": BatchedIRM,
    "vrex": BatchedVREx,
    "fishr": BatchedFishr,
    "coral": BatchedFeatureMatching,
    "mmd": BatchedFeatureMatching,
    "ib_erm": BatchedIBERM,
    "group_dro": BatchedGroupDRO,
    "sd": BatchedSD,
}
