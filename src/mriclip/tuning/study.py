"""Running an Optuna study: storage, pruner, objective over CV folds, failure handling."""

from __future__ import annotations

import logging
import os
import socket
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import torch
from matplotlib.figure import Figure

from mriclip.training.engine import NonFiniteLossError
from mriclip.tuning.search_space import SearchParameter, resolve, with_values

logger = logging.getLogger(__name__)

OBJECTIVES = {"zero_shot_auc": "maximize", "retrieval_mrr": "maximize", "val_loss": "minimize"}


class TooFewValidationScans(ValueError):
    """A CV fold left fewer than two validation scans: no contrastive validation."""


#: What makes a trial fail (recorded with its reason) without stopping the study; anything
#: else is a bug and stops it.
TRIAL_FAILURES = (NonFiniteLossError, torch.OutOfMemoryError, TooFewValidationScans)


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=1),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(),
        "none": optuna.pruners.NopPruner,
    }
    if name not in pruners:
        raise ValueError(f"tuning.pruner must be one of {sorted(pruners)}, got {name!r}")
    return pruners[name]()


JOURNAL_SCHEME = "journal:///"


def make_storage(storage_url: str) -> str | optuna.storages.BaseStorage:
    """The Optuna storage a URL names.

    ``journal:///path`` (relative to the working directory; ``journal:////abs/path`` for
    an absolute one, as with ``sqlite:///``) is Optuna's JournalStorage on a file: several
    processes on one machine share a study without a database server (the file lock
    serialises their writes). Any other URL is a database for Optuna's RDBStorage:
    ``sqlite:///`` for one process, ``postgresql://`` or ``mysql://`` for workers on
    several machines."""
    for scheme in ("sqlite:///", JOURNAL_SCHEME):
        if storage_url.startswith(scheme):
            Path(storage_url.removeprefix(scheme)).parent.mkdir(parents=True, exist_ok=True)
    if storage_url.startswith(JOURNAL_SCHEME):
        from optuna.storages.journal import JournalFileBackend, JournalStorage

        return JournalStorage(JournalFileBackend(storage_url.removeprefix(JOURNAL_SCHEME)))
    return storage_url


def create_tables(storage_url: str, attempts: int = 3) -> None:
    """Create Optuna's tables in a database if they are missing.

    Workers started together on an empty PostgreSQL database all create them; all but one
    fail on the others' rows (a UniqueViolation on Optuna's enum types, measured with two
    workers). The tables then exist, so a failed attempt is retried."""
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    for attempt in range(1, attempts + 1):
        try:
            optuna.storages.RDBStorage(storage_url)
            return
        except (IntegrityError, ProgrammingError) as error:
            if attempt == attempts:
                raise
            logger.info(
                "another worker is creating the study tables (%s); retrying",
                type(error.orig).__name__,
            )
            time.sleep(0.5 * attempt)


def redacted(storage_url: str) -> str:
    """The URL without its password, for logs."""
    scheme, _, rest = storage_url.partition("://")
    if "@" not in rest:
        return storage_url
    credentials, _, host = rest.rpartition("@")
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{host}"


def open_study(
    storage_url: str, study_name: str, objective: str, pruner: str, seed: int
) -> tuple[optuna.Study, bool]:
    """Create the study, or continue it if the storage already holds one of that name;
    returns it and whether this call created it. Of several workers starting one new study
    at once exactly one creates it (the storage refuses a second study of the name), so
    "created" says who sets the study up, where "it has no trials yet" is true for all."""
    if objective not in OBJECTIVES:
        raise ValueError(f"tuning.objective must be one of {sorted(OBJECTIVES)}, got {objective!r}")
    storage = make_storage(storage_url)
    if isinstance(storage, str):
        create_tables(storage)
    settings = {
        "storage": storage,
        "study_name": study_name,
        "pruner": make_pruner(pruner),
        "sampler": optuna.samplers.TPESampler(seed=seed),
    }
    try:
        study = optuna.create_study(direction=OBJECTIVES[objective], **settings)
        created = True
    except optuna.exceptions.DuplicatedStudyError:
        study, created = optuna.load_study(**settings), False
    logger.info(
        "study %r in %s: %d trials so far", study_name, redacted(storage_url), len(study.trials)
    )
    return study, created


FoldTrainer = Callable[[dict, int, Callable[[dict], None]], dict]
"""``train(alignment_params, fold, on_validation) -> last validation row``; calls
``on_validation(row)`` at every validation step (row holds val_loss and val_* metrics)."""


def make_objective(
    space: list[SearchParameter],
    base_alignment: Mapping,
    trial_overrides: Mapping,
    folds: Sequence[int],
    objective: str,
    train_fold: FoldTrainer,
) -> Callable[[optuna.Trial], float]:
    """Objective = mean over ``folds`` of the last validation ``objective`` value. Every
    validation is reported so pruners can stop bad trials early."""
    key = "val_loss" if objective == "val_loss" else f"val_{objective}"

    def run_trial(trial: optuna.Trial) -> float:
        sampled = {parameter.name: parameter.suggest(trial) for parameter in space}
        params = resolve(base_alignment, space, sampled)
        trial.set_user_attr("alignment", params)
        # which process ran it: workers on several machines share one study
        trial.set_user_attr("worker", f"{socket.gethostname()}/{os.getpid()}")
        runtime = with_values(params, _flatten(trial_overrides))
        reports = iter(range(10**9))

        def on_validation(row: dict) -> None:
            trial.report(float(row[key]), next(reports))
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned after {row['step']} steps: {key}={row[key]}")

        values = []
        for fold in folds:
            try:
                values.append(float(train_fold(runtime, fold, on_validation)[key]))
            except TRIAL_FAILURES as error:
                trial.set_user_attr("fail_reason", f"{type(error).__name__}: {error}")
                raise
        return float(np.mean(values))

    return run_trial


def _flatten(nested: Mapping, prefix: str = "") -> dict:
    flat = {}
    for key, value in nested.items():
        path = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(_flatten(value, f"{path}."))
        else:
            flat[path] = value
    return flat


def run_study(
    study: optuna.Study, objective: Callable, n_trials: int, timeout_s: float | None
) -> optuna.Study:
    study.optimize(objective, n_trials=n_trials, timeout=timeout_s, catch=TRIAL_FAILURES)
    states = [trial.state.name for trial in study.trials]
    logger.info(
        "study %r: %s",
        study.study_name,
        {state: states.count(state) for state in sorted(set(states))},
    )
    return study


def study_figures(study: optuna.Study) -> tuple[Figure, Figure, Figure]:
    """Optimisation history, parameter importances, parallel coordinates (Optuna's
    matplotlib plots); the last two need two complete trials and say so otherwise."""
    from optuna.visualization import matplotlib as optuna_plots

    complete = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    figures = []
    for plot in (
        optuna_plots.plot_optimization_history,
        optuna_plots.plot_param_importances,
        optuna_plots.plot_parallel_coordinate,
    ):
        if len(complete) < 2 and plot is not optuna_plots.plot_optimization_history:
            figure = Figure(figsize=(6, 3))
            figure.text(
                0.5,
                0.5,
                f"{plot.__name__}: needs at least 2 complete trials",
                ha="center",
                va="center",
            )
        else:
            with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                figure = plot(study).figure
        figures.append(figure)
    return tuple(figures)


def trials_table(study: optuna.Study) -> pd.DataFrame:
    """One row per trial: state, value, parameters, and why it failed or was pruned."""
    table = study.trials_dataframe(
        attrs=("number", "state", "value", "datetime_start", "duration", "params", "user_attrs")
    )
    return table.drop(columns=[c for c in table.columns if c == "user_attrs_alignment"])
