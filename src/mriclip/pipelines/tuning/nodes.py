"""Thin nodes of the tuning pipeline: an Optuna study over the alignment parameters."""

from __future__ import annotations

import logging

import optuna

from mriclip.splits import in_split
from mriclip.tuning.cross_validation import FoldInputs, train_on_fold
from mriclip.tuning.search_space import current_values, parse_search_space
from mriclip.tuning.study import (
    TooFewValidationScans,
    make_objective,
    open_study,
    run_study,
    study_figures,
    trials_table,
)

logger = logging.getLogger(__name__)


def tune_alignment(
    optuna_storage: str, alignment: dict, params: dict, seed: int, **inputs
) -> tuple:
    """Run (or continue) the study; trials train on CV folds of the training split only.
    ``inputs`` are what a fold trains from (``FoldInputs``; the alignment pipeline's
    ``FOLD_INPUTS``).

    Returns ``best_params`` (a parameters file: ``{"alignment": ...}``), the same for
    ``conf/tuned``, the trials table and the study's figures."""
    data = FoldInputs(**inputs)
    splits = data.splits
    space = parse_search_space(params["search_space"], alignment)
    folds = sorted(set(in_split(splits, "train")["fold"]))[: params["folds_per_trial"]]

    def train_fold(trial_alignment: dict, fold: int, on_validation) -> dict:
        _, history = train_on_fold(data, {**trial_alignment, "fold": fold}, seed, on_validation)
        if "val_loss" not in history or history["val_loss"].isna().all():
            raise TooFewValidationScans(
                f"fold {fold} has fewer than 2 validation scans; lower "
                "data_engineering.splits.n_folds or add patients"
            )
        return history.dropna(subset=["val_loss"]).iloc[-1].to_dict()

    study, created = open_study(
        optuna_storage,
        params["study_name"],
        params["objective"],
        params["pruner"],
        params["sampler_seed"],
    )
    if params["enqueue_defaults"] and created:
        # Only the worker that created the study: workers that all saw it without trials
        # each enqueued the defaults before (skip_if_exists cannot see a trial not yet written).
        study.enqueue_trial(current_values(space, alignment), user_attrs={"defaults": True})
    objective = make_objective(
        space, alignment, params["trial_overrides"], folds, params["objective"], train_fold
    )
    run_study(study, objective, params["n_trials"], params["timeout_s"])
    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    if complete:
        best = {"alignment": study.best_trial.user_attrs["alignment"]}  # as the trial ran
        logger.info(
            "best trial %d: %s = %.4f",
            study.best_trial.number,
            params["objective"],
            study.best_value,
        )
    else:
        logger.warning(
            "no trial of study %r has completed; best_params is empty (see the "
            "trials table for why trials failed)",
            study.study_name,
        )
        best = {}
    return best, best, trials_table(study), *study_figures(study)
