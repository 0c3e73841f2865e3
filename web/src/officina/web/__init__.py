"""Officina web."""
