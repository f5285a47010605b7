"""Optuna studies over the alignment parameters, and alignment on one cross-validation fold
(:mod:`mriclip.tuning.cross_validation`: what the alignment node and each trial train)."""
