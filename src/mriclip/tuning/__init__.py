"""Optuna studies over the alignment parameters."""
