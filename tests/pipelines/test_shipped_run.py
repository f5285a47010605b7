"""Every pipeline as shipped: conf/base's settings, with only the step counts and the cohort
size lowered, through ``kedro run`` in a fresh copy of the project. A 12-patient phantom is a
pilot cohort: its training split holds fewer scans than conf/base's micro-batch of 16 patches.

What ``--env test`` changes beyond that (a coarser grid, micro-batches of 2, two folds) hid a
broken tuning default and the pilot cohort's refusal; this run has none of it.
"""

import json
import shutil

import pandas as pd
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.pipelines.helpers import copy_project

#: The only changes to conf/base: the cohort's size and the number of steps (and trials).
SHORT = {
    "parameters_demo_data.yml": "demo_data:\n  n_patients: 12\n  n_scans: null\n",
    "parameters_pretraining.yml": (
        "pretraining:\n  training: {steps: 2, warmup_steps: 1, val_every: 1, checkpoint_every: 1}\n"
    ),
    "parameters_alignment.yml": (
        "alignment:\n  training: {steps: 2, warmup_steps: 1, val_every: 1, checkpoint_every: 1}\n"
    ),
    "parameters_tuning.yml": (
        "tuning:\n  n_trials: 1\n  folds_per_trial: 1\n"
        "  trial_overrides:\n    training: {steps: 2, warmup_steps: 1, val_every: 1}\n"
    ),
}


def run(project, pipeline=None):
    with KedroSession.create(project_path=project, env="short") as session:
        session.run(pipeline_names=[pipeline] if pipeline else None)


@pytest.fixture(scope="module")
def shipped_project(tmp_path_factory):
    project = copy_project(tmp_path_factory.mktemp("shipped"))
    short = project / "conf" / "short"
    short.mkdir()
    for name, text in SHORT.items():
        (short / name).write_text(text)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(project)
        patch.setenv("DO_NOT_TRACK", "1")
        bootstrap_project(project)
        run(project)  # __default__: demo_data -> ... -> reporting
        run(project, "tuning")
        new = project / "data" / "01_raw" / "inference" / "images"
        new.mkdir(parents=True)
        for image in sorted((project / "data" / "01_raw" / "images").glob("*.nii.gz"))[:2]:
            shutil.copy(image, new)
        run(project, "inference")
    return project


def only_version(folder):
    [version] = sorted(folder.iterdir())
    return version / folder.name


def test_the_default_chain_runs_a_pilot_cohort_on_base_settings(shipped_project):
    data = shipped_project / "data"
    splits = pd.read_csv(data / "03_primary" / "splits.csv")
    assert splits["patient_id"].nunique() == 12
    train = splits[(splits["split"] == "train") & (splits["fold"] != 0)]
    assert len(train) < 16  # fewer training scans than the micro-batch: drawn again
    history = pd.read_csv(only_version(data / "07_model_output" / "alignment_history.csv"))
    assert history["step"].tolist() == [1, 2]
    metrics = json.loads(only_version(data / "08_reporting" / "zero_shot_metrics.json").read_text())
    assert "lesion_ablated" in metrics["scan_level"]
    assert only_version(data / "08_reporting" / "report.html").stat().st_size > 0


def test_tuning_runs_with_the_shipped_search_space(shipped_project):
    trials = pd.read_csv(only_version(shipped_project / "data" / "08_reporting" / "trials.csv"))
    assert len(trials) == 1 and (trials["state"] == "COMPLETE").all()


def test_inference_runs_on_new_scans(shipped_project):
    predictions = pd.read_csv(
        only_version(shipped_project / "data" / "07_model_output" / "scan_predictions.csv")
    )
    assert len(predictions) == 2
