"""The tuning pipeline's study: each trial trains the alignment with its parameters on
cross-validation folds of the training split (never the test split) and is scored on the
folds' validation scans (``tuning.objective``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping

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


def tune_alignment_on_folds(
    storage_url: str, alignment: Mapping, params: Mapping, seed: int, data: FoldInputs
) -> tuple:
    """Run (or continue) the study ``params`` describe (the ``tuning`` parameters) over the
    ``alignment`` parameters. Returns the best trial's alignment parameters as
    ``{"alignment": ...}`` (empty when no trial completed), the trials table and the study's
    figures."""
    if params["objective"] != "val_loss" and data.lesion_table.empty:
        raise ValueError(
            f"tuning.objective {params['objective']!r} scores how validation scans' lesions "
            "are found, and this cohort has no lesions: set tuning.objective: val_loss"
        )
    space = parse_search_space(params["search_space"], alignment)
    folds = sorted(set(in_split(data.splits, "train")["fold"]))[: params["folds_per_trial"]]

    def train_fold(trial_alignment: dict, fold: int, on_validation) -> dict:
        _, history = train_on_fold(data, {**trial_alignment, "fold": fold}, seed, on_validation)
        if "val_loss" not in history or history["val_loss"].isna().all():
            raise TooFewValidationScans(
                f"fold {fold} has fewer than 2 validation scans; lower "
                "data_engineering.splits.n_folds or add patients"
            )
        return history.dropna(subset=["val_loss"]).iloc[-1].to_dict()

    study, created = open_study(
        storage_url,
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
    return best_alignment(study, params["objective"]), trials_table(study), *study_figures(study)


def best_alignment(study: optuna.Study, objective: str) -> dict:
    """``{"alignment": ...}`` as the best completed trial ran it; empty without one."""
    if not study.get_trials(states=(optuna.trial.TrialState.COMPLETE,)):
        logger.warning(
            "no trial of study %r has completed; best_params is empty (see the "
            "trials table for why trials failed)",
            study.study_name,
        )
        return {}
    best = study.best_trial
    logger.info("best trial %d: %s = %.4f", best.number, objective, study.best_value)
    return {"alignment": best.user_attrs["alignment"]}
