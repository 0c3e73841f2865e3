"""Model runtimes and the work done on models by workers: evaluation, export, batch prediction."""
