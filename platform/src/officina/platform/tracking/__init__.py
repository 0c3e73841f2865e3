"""Experiment tracking: runs with parameters, metrics, artifacts and checkpoints."""
