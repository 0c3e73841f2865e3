"""Datasets: safe archive reading, format parsing, statistics, manifests and splits (pure logic, no I/O to services)."""
