"""Hard parameter sharing (Caruana 1997): one trunk for all tasks, one linear head per task,
uniform loss weights."""

from bench.multitask.method import SharedTrunk, register_method


@register_method("hard_sharing")
class HardSharing(SharedTrunk):
    VERSION = 1
