"""Officina sdk."""
