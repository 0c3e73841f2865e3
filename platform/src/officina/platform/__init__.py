"""Officina's domain services and their Postgres and S3 access."""
