"""Officina infra."""
