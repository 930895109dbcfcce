"""What is done around a trained model: weight averaging, ensembles, test-time adaptation.

Each method produces records of the same shape as a run's (``{env: {"in", "out"}}``), kept
beside the run they come from, so selection rules, statistics and boards treat them as
rows of their own (``erm + swad``, ``erm + t3a``, ``ensemble(erm)``) next to the base row.
"""
