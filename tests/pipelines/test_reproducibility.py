"""The same command with the same seed gives the same figures: the default chain of the
`test` environment, run again in a fresh copy of the project with preprocessing and the
training data loader in other process layouts (serial preprocessing instead of 2 workers, one
loader worker instead of none), must reproduce every value of the first run's
zero_shot_metrics, bootstrap intervals and the recorded compute environment included."""

import json

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.pipelines.helpers import copy_project

OTHER_LAYOUT = {
    "data_engineering": {"workers": 1},
    "alignment": {"training": {"num_workers": 1}},
}


def latest(project, relative):
    folder = project / relative
    return sorted(folder.iterdir())[-1] / folder.name


def end_tracking_run():
    """kedro-mlflow (the mlflow extra) leaves its run active; the next session must not log
    into it."""
    try:
        import mlflow
    except ImportError:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_a_second_run_reproduces_every_metric(default_run, tmp_path):
    project = copy_project(tmp_path / "again")
    (project / "conf" / "test" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{project}/mlflow.db\n"
    )
    end_tracking_run()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv("DO_NOT_TRACK", "1")
        bootstrap_project(project)
        with KedroSession.create(
            project_path=project, env="test", runtime_params=OTHER_LAYOUT
        ) as session:
            session.run()
    end_tracking_run()
    first = json.loads(latest(default_run, "data/08_reporting/zero_shot_metrics.json").read_text())
    second = json.loads(latest(project, "data/08_reporting/zero_shot_metrics.json").read_text())
    assert first["environment"]["torch_threads"] >= 1
    assert second == first
