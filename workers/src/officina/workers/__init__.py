"""Officina workers."""
