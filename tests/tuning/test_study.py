import math

import optuna
import pytest
import yaml
from kedro.config import OmegaConfigLoader

from mriclip import settings
from mriclip.training.engine import NonFiniteLossError
from mriclip.tuning.search_space import parse_search_space, resolve
from mriclip.tuning.study import make_objective, open_study, run_study, trials_table
from tests.pipelines.helpers import PROJECT, load_parameters

SPACE = {
    "lr": {"path": "training.lr_vision", "type": "float", "low": 1e-5, "high": 1e-2, "log": True}
}


def objective_with(alignment, train_fold, folds=(0,)):
    space = parse_search_space(SPACE, alignment)
    return make_objective(
        space, alignment, {"training": {"steps": 3}}, list(folds), "zero_shot_auc", train_fold
    )


def test_bad_trials_are_pruned_and_failures_recorded_while_the_study_goes_on(tmp_path):
    alignment = load_parameters("test")["alignment"]
    study, created = open_study(
        f"sqlite:///{tmp_path}/s.db", "s", "zero_shot_auc", "median", seed=0
    )
    assert created
    calls = []

    def train_fold(params, fold, on_validation):
        calls.append(params["training"]["steps"])
        trial_index = len(calls) - 1
        if trial_index == 3:
            raise NonFiniteLossError("loss is nan at step 2")
        value = 0.1 if trial_index == 2 else 0.8
        for step in range(3):
            on_validation({"step": step, "val_zero_shot_auc": value})
        return {"val_zero_shot_auc": value}

    run_study(study, objective_with(alignment, train_fold), n_trials=5, timeout_s=None)
    states = [trial.state for trial in study.trials]
    assert states[2] == optuna.trial.TrialState.PRUNED
    assert states[3] == optuna.trial.TrialState.FAIL
    assert study.trials[3].user_attrs["fail_reason"] == (
        "NonFiniteLossError: loss is nan at step 2"
    )
    assert states[4] == optuna.trial.TrialState.COMPLETE  # the study went on after both
    assert calls == [3] * 5  # trial overrides reach the trainer
    table = trials_table(study)
    assert table.loc[3, "user_attrs_fail_reason"].startswith("NonFiniteLossError")
    assert "user_attrs_alignment" not in table.columns


def test_second_invocation_continues_the_same_study(tmp_path):
    alignment = load_parameters("test")["alignment"]
    url = f"sqlite:///{tmp_path}/study.db"

    def train_fold(params, fold, on_validation):
        return {"val_zero_shot_auc": 1 / (1 + abs(math.log10(params["training"]["lr_vision"])))}

    for expected in (2, 4):
        study, created = open_study(url, "continued", "zero_shot_auc", "none", seed=0)
        assert created == (expected == 2)
        run_study(study, objective_with(alignment, train_fold), n_trials=2, timeout_s=None)
        assert len(study.trials) == expected


def test_objective_is_the_mean_over_folds(tmp_path):
    alignment = load_parameters("test")["alignment"]
    study = optuna.create_study(direction="maximize")
    study.optimize(
        objective_with(
            alignment, lambda p, fold, cb: {"val_zero_shot_auc": fold / 4}, folds=(0, 1, 2)
        ),
        n_trials=1,
    )
    assert study.best_value == pytest.approx(0.25)


def test_best_params_round_trip_into_the_alignment_parameters(tmp_path):
    base = load_parameters("test")["alignment"]
    space = parse_search_space(
        {
            **SPACE,
            "t": {"path": "clip.init_temperature", "type": "float", "low": 0.02, "high": 1.0},
        },
        base,
    )
    best = {"alignment": resolve(base, space, {"lr": 3e-4, "t": 0.5})}
    conf = tmp_path / "conf"
    (conf / "tuned").mkdir(parents=True)
    (conf / "base").symlink_to(PROJECT / "conf" / "base")
    (conf / "tuned" / "parameters_alignment.yml").write_text(yaml.safe_dump(best))
    args = {**settings.CONFIG_LOADER_ARGS, "default_run_env": "tuned"}
    loaded = OmegaConfigLoader(str(conf), **args)["parameters"]["alignment"]
    assert loaded == best["alignment"]
    assert loaded["training"]["lr_vision"] == 3e-4 and loaded["clip"]["init_temperature"] == 0.5


def test_unknown_objective_and_pruner_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="tuning.objective must be one of"):
        open_study(f"sqlite:///{tmp_path}/a.db", "a", "accuracy", "median", 0)
    with pytest.raises(ValueError, match="tuning.pruner must be one of"):
        open_study(f"sqlite:///{tmp_path}/a.db", "a", "val_loss", "asha", 0)


def test_storage_urls_name_sqlite_journal_or_a_database(tmp_path):
    from optuna.storages import JournalStorage

    from mriclip.datasets import OptunaStorageDataset
    from mriclip.tuning.study import make_storage, redacted

    journal = tmp_path / "deep" / "optuna.journal"
    storage = make_storage(f"journal:///{journal}")
    assert isinstance(storage, JournalStorage) and journal.parent.is_dir()
    study, _ = open_study(f"journal:///{journal}", "j", "val_loss", "none", 0)
    study.optimize(lambda trial: trial.suggest_float("x", 0, 1), n_trials=2)
    reopened = optuna.load_study(study_name="j", storage=make_storage(f"journal:///{journal}"))
    assert [trial.value for trial in reopened.trials] == [trial.value for trial in study.trials]
    assert make_storage("postgresql://u:pw@db:5432/optuna") == "postgresql://u:pw@db:5432/optuna"
    assert redacted("postgresql://u:pw@db:5432/optuna") == "postgresql://u:***@db:5432/optuna"
    assert redacted("sqlite:///data/optuna.db") == "sqlite:///data/optuna.db"
    shared = OptunaStorageDataset(credentials={"url": "postgresql://u:pw@db/optuna"})
    assert shared.load() == "postgresql://u:pw@db/optuna"
    assert "pw" not in str(shared._describe())
    local = OptunaStorageDataset(url=f"journal:///{journal}")
    assert local._describe() == {"url": f"journal:///{journal}"}


def test_a_lesion_objective_on_a_cohort_without_lesions_is_refused_before_any_trial(tmp_path):
    import pandas as pd

    from mriclip.tuning.alignment_study import tune_alignment_on_folds
    from mriclip.tuning.cross_validation import FoldInputs

    parameters = load_parameters("test")
    no_lesions = FoldInputs(pd.DataFrame(), pd.DataFrame(), {}, {}, pd.DataFrame(), {}, None,
                            {}, [])  # fmt: skip
    storage = f"sqlite:///{tmp_path}/s.db"
    with pytest.raises(ValueError, match="no lesions: set tuning.objective: val_loss"):
        tune_alignment_on_folds(storage, parameters["alignment"], parameters["tuning"], 0,
                                no_lesions)  # fmt: skip
    assert not (tmp_path / "s.db").exists()  # refused before a study was opened
