"""Meta-learning for few-shot transfer: the episodic protocol, methods, a seeded runner, boards.

Layers, each importing only those above it in this list: ``episodes`` (sampling),
``few_shot`` (few-shot datasets: class pools), ``base`` (method contract + registry), ``methods/``,
``spec`` (run identity), ``runner`` (one run), ``board`` (tables and figure), ``cli``.
"""
