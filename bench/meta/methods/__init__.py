"""Registered meta-learning methods; importing this package registers each of them."""

from bench.meta.methods import baseline, maml, protonet, scratch

__all__ = ["baseline", "maml", "protonet", "scratch"]
