"""Experiment tracking with the `mlflow` extra: the default run, read back through the
mlflow client, holds its parameters, per-step training curves, metrics, report and model;
tuning trials become child runs."""

import json
import math
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest

pytest.importorskip("kedro_mlflow", reason="the mlflow extra is not installed")
from mlflow import MlflowClient  # noqa: E402
from mlflow.artifacts import download_artifacts  # noqa: E402

from mriclip.tracking import flatten_metrics, log_trials  # noqa: E402
from mriclip.tuning.study import trials_table  # noqa: E402
from tests.pipelines.helpers import load_parameters  # noqa: E402


def latest(folder):
    return sorted(folder.iterdir())[-1] / folder.name


@pytest.fixture(scope="module")
def tracked(default_run):
    uri = f"sqlite:///{default_run}/tracking/mlflow.db"
    client = MlflowClient(uri)
    experiment = client.get_experiment_by_name("mriclip")
    (run,) = client.search_runs([experiment.experiment_id])
    return default_run, client, run, uri


def test_run_holds_the_parameters(tracked):
    _, _, run, _ = tracked
    parameters = load_parameters("test")
    assert run.info.status == "FINISHED"
    assert run.data.params["seed"] == str(parameters["seed"])
    steps = parameters["alignment"]["training"]["steps"]
    assert run.data.params["alignment.training.steps"] == str(steps)
    assert run.data.params["pretraining.training.steps"] == str(
        parameters["pretraining"]["training"]["steps"]
    )


@pytest.mark.parametrize(
    "dataset, prefix", [("alignment_history", "alignment"), ("pretraining_history", "pretraining")]
)
def test_training_curves_are_metrics_per_step(tracked, dataset, prefix):
    project, client, run, _ = tracked
    history = pd.read_csv(latest(project / "data" / "07_model_output" / f"{dataset}.csv"))
    assert "loss" in history and len(history) > 1
    for column in history.columns.drop("step"):
        logged = client.get_metric_history(run.info.run_id, f"{prefix}.{column}")
        expected = history[["step", column]].dropna()
        assert [m.step for m in logged] == expected["step"].tolist(), column
        np.testing.assert_allclose([m.value for m in logged], expected[column], rtol=1e-6)


@pytest.mark.parametrize("name", ["zero_shot", "retrieval", "baseline"])
def test_final_metrics_are_flattened(tracked, name):
    project, _, run, _ = tracked
    metrics = json.loads(
        latest(project / "data" / "08_reporting" / f"{name}_metrics.json").read_text()
    )
    flat = flatten_metrics(metrics, f"{name}.")
    assert flat and flat.items() <= run.data.metrics.items()
    if name == "zero_shot":
        assert run.data.metrics["zero_shot.scan_level.random.overall.auc_macro"] == 0.5
        model = metrics["scan_level"]["model"]["overall"]["auc_macro"]
        assert run.data.metrics["zero_shot.scan_level.model.overall.auc_macro"] == model


def test_report_and_model_are_artifacts(tracked, tmp_path):
    project, client, run, uri = tracked
    run_id = run.info.run_id
    assert {a.path for a in client.list_artifacts(run_id)} >= {"report", "model"}
    report = download_artifacts(
        run_id=run_id, artifact_path="report/report.html", dst_path=tmp_path, tracking_uri=uri
    )
    saved = latest(project / "data" / "08_reporting" / "report.html")
    assert Path(report).read_text() == saved.read_text()
    model = download_artifacts(
        run_id=run_id, artifact_path="model/clip_model.pt", dst_path=tmp_path, tracking_uri=uri
    )
    assert (
        Path(model).read_bytes()
        == latest(project / "data" / "06_models" / "clip_model.pt").read_bytes()
    )


def test_metric_dicts_flatten_to_numbers():
    nested = {
        "scan_level": {
            "model": {"overall": {"auc_macro": 0.7, "auc_macro_ci": [0.6, 0.8], "n": 12}},
            "note": "bootstrap over patients",
        },
        "lesion_detection": {"model": {"auc": np.float32(0.5), "undefined": math.nan}},
        "per_region": {"frontal (L)": 0.9},
        "flags": {"ablated": True, "ranks": [1, 2, 3]},
    }
    assert flatten_metrics(nested, "zero_shot.") == {
        "zero_shot.scan_level.model.overall.auc_macro": 0.7,
        "zero_shot.scan_level.model.overall.auc_macro_ci_low": 0.6,
        "zero_shot.scan_level.model.overall.auc_macro_ci_high": 0.8,
        "zero_shot.scan_level.model.overall.n": 12.0,
        "zero_shot.lesion_detection.model.auc": 0.5,
        "zero_shot.per_region.frontal _L_": 0.9,
    }


def test_trials_become_child_runs(tmp_path):
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    experiment_id = client.create_experiment("tuning", artifact_location=str(tmp_path / "a"))
    parent = client.create_run(experiment_id, run_name="tuning").info.run_id

    def objective(trial):
        lr = trial.suggest_float("lr", 1e-5, 1e-3, log=True)
        if trial.number == 1:
            raise optuna.TrialPruned("pruned after 2 steps")
        if trial.number == 2:
            trial.set_user_attr("fail_reason", "FloatingPointError: loss is nan")
            raise FloatingPointError("loss is nan")
        return lr * 1000

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.optimize(objective, n_trials=3, catch=(FloatingPointError,))
    log_trials(client, parent, trials_table(study))

    children = client.search_runs(
        [experiment_id], f"tags.mlflow.parentRunId = '{parent}'", order_by=["attributes.start_time"]
    )
    by_number = {int(run.data.tags["optuna.trial_number"]): run for run in children}
    assert sorted(by_number) == [0, 1, 2]
    first = study.trials[0]
    assert by_number[0].data.params["lr"] == str(first.params["lr"])
    assert by_number[0].data.metrics["value"] == pytest.approx(first.value)
    assert [by_number[n].info.status for n in range(3)] == ["FINISHED", "KILLED", "FAILED"]
    assert by_number[2].data.tags["optuna.fail_reason"] == "FloatingPointError: loss is nan"
    assert "value" not in by_number[1].data.metrics
