"""`kedro run --pipeline pretraining` and `--pipeline alignment` with
``*.training.distributed.nproc_per_node=2``: two DDP processes on the CPU (gloo), in a copy
of the default run's project (its data already prepared)."""

import shutil

import pandas as pd
import pytest
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import end_mlflow_runs


@pytest.mark.parametrize(
    ("pipeline", "history"),
    [("pretraining", "pretraining_history.csv"), ("alignment", "alignment_history.csv")],
)
def test_two_process_kedro_run(default_run, tmp_path, pipeline, history):
    project = shutil.copytree(
        default_run, tmp_path / "project", ignore=shutil.ignore_patterns("tracking")
    )
    # Tracked where kedro-mlflow tracks by default, in the copy: the default run's run may
    # still be open, and its tracking database is the original's.
    (project / "conf" / "test" / "mlflow.yml").unlink()
    end_mlflow_runs()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv("DO_NOT_TRACK", "1")
        bootstrap_project(project)
        training = {"distributed": {"nproc_per_node": 2}, "checkpoint_dir": str(tmp_path)}
        if pipeline == "alignment":  # the test cohort trains on 2 scans: 1 a process
            training["micro_batch_size"] = 1
        params = {pipeline: {"training": training}}
        with KedroSession.create(
            project_path=project, env="test", runtime_params=params
        ) as session:
            session.run(pipeline_names=[pipeline])
    last = torch.load(tmp_path / "last.pt", weights_only=True)
    assert last["settings"]["world_size"] == 2 and len(last["ranks"]) == 2
    written = list((project / "data").rglob(history))
    assert written, f"{history} was not saved"
    saved = pd.read_csv(max(written, key=lambda path: path.stat().st_mtime))
    assert saved["step"].tolist() == list(range(1, last["step"] + 1))
    assert saved["loss"].notna().all()
