"""Fixtures for generated checkpoints (see modelgen.py)."""
