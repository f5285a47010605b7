"""The default chain run once through Kedro for every test that reads its outputs."""

import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.pipelines.helpers import copy_project


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """A fresh copy of the project after `kedro run --env test`: demo data on disk, then every
    pipeline up to the report. With the mlflow extra, kedro-mlflow tracks the run into
    ``tracking/`` of the copy: its conf/test/mlflow.yml changes the tracking URI as a user's
    conf/local/mlflow.yml would."""
    project = copy_project(tmp_path_factory.mktemp("project"))
    (project / "tracking").mkdir()
    (project / "conf" / "test" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{project}/tracking/mlflow.db\n"
        "tracking:\n  experiment:\n    create_experiment_kwargs:\n"
        f"      artifact_location: {project}/tracking/artifacts\n"
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv("DO_NOT_TRACK", "1")  # kedro-telemetry: never phone home from a test
        bootstrap_project(project)
        with KedroSession.create(project_path=project, env="test") as session:
            session.run()
    return project
