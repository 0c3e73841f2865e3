"""Celery tasks: thin wrappers over platform services, one module per area."""
