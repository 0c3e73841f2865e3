"""Built-in trainers run by jobs: ``python -m officina.workers.trainers.<tabular|image|text>``."""
