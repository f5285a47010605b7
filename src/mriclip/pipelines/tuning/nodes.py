"""Thin nodes of the tuning pipeline: an Optuna study over the alignment parameters."""

from __future__ import annotations

from mriclip.tuning.alignment_study import tune_alignment_on_folds
from mriclip.tuning.cross_validation import FoldInputs


def tune_alignment(
    optuna_storage: str, alignment: dict, params: dict, seed: int, **inputs
) -> tuple:
    """Run (or continue) the study; trials train on CV folds of the training split only.
    ``inputs`` are what a fold trains from (``FoldInputs``; the alignment pipeline's
    ``FOLD_INPUTS``).

    Returns ``best_params`` (a parameters file: ``{"alignment": ...}``), the same for
    ``conf/tuned``, the trials table and the study's figures."""
    best, trials, *figures = tune_alignment_on_folds(
        optuna_storage, alignment, params, seed, FoldInputs(**inputs)
    )
    return best, best, trials, *figures
