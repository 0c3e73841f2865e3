"""Hyper-parameter tuning: studies whose trials are jobs, searched and pruned by Optuna."""
