"""bench: a seeded, resumable benchmark harness for domain generalization and transfer."""

__version__ = "0.1.0"
