"""Cohorts without lesion information or without the phantom's columns run the default chain:
the phantom in the user layout without its diagnosis column, the phantom with its lesion
tables withheld, and a BIDS dataset of real anatomy with participants.tsv only."""

import pandas as pd
import pytest

from mriclip.datasets import BIDSDataset
from mriclip.phantom import PhantomConfig, generate_cohort
from mriclip.pipelines.alignment.pipeline import create_pipeline as alignment
from mriclip.pipelines.data_engineering.pipeline import create_pipeline as data_engineering
from mriclip.pipelines.evaluation.pipeline import create_pipeline as evaluation
from mriclip.pipelines.pretraining.pipeline import create_pipeline as pretraining
from mriclip.pipelines.reporting.pipeline import create_pipeline as reporting
from tests.bids_trees import nibabel_tree_without_lesions
from tests.pipelines.helpers import load_parameters, run_in_memory

#: Inputs of the chain that these cohorts do not have.
NO_EXTRAS = {
    "unlabelled_images": {},
    "run_metadata": {"save_version": "2026-01-01T00.00.00.000Z", "versions": {}},
}


def chain():
    """The default chain after demo_data."""
    return data_engineering() + pretraining() + alignment() + evaluation() + reporting()


def _loaded(image):
    return lambda: image


@pytest.fixture(scope="module")
def phantom():
    settings = load_parameters("test")["demo_data"]
    settings = {k: v for k, v in settings.items() if k != "overwrite_existing"}
    return generate_cohort(PhantomConfig.from_params(settings))


def user_layout(cohort, scans, with_lesions: bool) -> dict:
    """The phantom as a user brings it: images, labels, scans.csv, lesions.csv (the last two
    withheld without lesions); no raw twins."""
    labels = cohort.labels if with_lesions else {}
    return {
        "raw_images": {key: _loaded(image) for key, image in cohort.images.items()},
        "raw_labels": {key: _loaded(image) for key, image in labels.items()},
        "raw_scans": scans,
        "raw_lesions": cohort.lesions if with_lesions else pd.DataFrame(),
        **NO_EXTRAS,
    }


def test_a_user_cohort_without_a_diagnosis_column_runs_the_default_chain(phantom):
    scans = phantom.scans.drop(columns=["diagnosis"])
    out = run_in_memory(chain(), user_layout(phantom, scans, with_lesions=True))

    assert "diagnosis" not in out["scan_sentences"]
    assert not out["scan_sentences"]["sentence"].str.contains("diagnosis").any()
    assert list(out["clip_model"]["inference"]["zero_shot"]["targets"]) == ["regions"]
    zero_shot = out["zero_shot_metrics"]
    assert {"model", "lesion_ablated", "random"} <= set(zero_shot["scan_level"])
    assert "targets" not in zero_shot
    reason = "the scans table has no column 'diagnosis'"
    assert zero_shot["skipped"] == {"target diagnosis": reason, "patch column diagnosis": reason}
    report = out["report"]
    assert "Skipped in this run" in report
    assert report.count("the scans table has no column &#39;diagnosis&#39;") == 2


def test_the_phantom_with_its_lesion_tables_withheld_runs_on_its_clinical_columns(phantom):
    out = run_in_memory(chain(), user_layout(phantom, phantom.scans, with_lesions=False))

    problems = out["catalog_problems"]
    assert len(problems) == 1 and problems.loc[0, "stage"] == "lesions"
    assert problems.loc[0, "problem"].startswith("no lesion information")
    assert out["lesion_table"].empty and out["preprocessed_labels"] == {}
    sentences = out["scan_sentences"]
    assert (sentences["n_lesions"] == 0).all()
    assert not sentences["sentence"].str.contains("lesion|tumor", case=False).any()
    assert sentences["sentence"].str.contains("The diagnosis is").all()
    zero_shot = out["zero_shot_metrics"]
    assert set(zero_shot["skipped"]) == {
        "target regions", "lesion level", "lesion detection", "lesion-ablated controls",
    }  # fmt: skip
    assert "scan_level" not in zero_shot and "lesion_level" not in zero_shot
    diagnosis = zero_shot["targets"]["diagnosis"]
    assert {"model", "before_alignment", "random"} <= set(diagnosis)
    assert diagnosis["model"]["counts"]["n_samples"] == (out["splits"]["split"] == "test").sum()
    assert list(out["retrieval_metrics"]) == ["targets"]
    assert "model" in out["retrieval_metrics"]["targets"]["diagnosis"]
    scores = out["test_scan_scores"]
    assert scores["prob_any_lesion"].isna().all()
    assert scores[["prob_atrophy", "prob_none"]].notna().all().all()
    report = out["report"]
    assert report.count("no lesion information") >= 4


@pytest.fixture
def bids_without_lesions(tmp_path):
    nibabel_tree_without_lesions(tmp_path / "bids")
    return {
        "raw_images": {},
        "raw_labels": {},
        "raw_scans": pd.DataFrame(),
        "raw_lesions": pd.DataFrame(),
        "bids_dataset": BIDSDataset(path=str(tmp_path / "bids")).load(),
        **NO_EXTRAS,
    }


def bids_parameters(**changes) -> dict:
    parameters = load_parameters("test")
    return {
        "data_engineering": {**parameters["data_engineering"], "source": "bids"},
        **{key: {**parameters[key], **value} for key, value in changes.items()},
    }


def test_a_bids_dataset_without_lesions_runs_data_engineering_through_evaluation(
    bids_without_lesions,
):
    """participants.tsv only; its group column named as the zero-shot target, as the README
    says a user does (classes listed: four subjects may leave one group out of training)."""
    sentences = load_parameters("test")["sentences"]
    group = {
        "column": "group",
        "classes": ["control", "patient"],
        "templates": ["The group is {value}."],
    }
    overrides = bids_parameters(
        sentences={"columns": {**sentences["columns"], "group": ["The group is {value}."]}},
        alignment={"patch_columns": ["group"]},
        evaluation={"targets": {"group": group}},
    )
    out = run_in_memory(chain(), bids_without_lesions, overrides=overrides)

    assert sorted(out["preprocessed_volumes"]) == ["sub-01", "sub-02", "sub-03", "sub-04"]
    sentences = out["scan_sentences"].set_index("scan_id")["sentence"]
    assert sentences["sub-01"] == (
        "The age of the subject is 30. The gender of the patient is F. The group is control."
    )
    assert sentences["sub-03"] == "The gender of the patient is F. The group is patient."  # n/a
    zero_shot = out["zero_shot_metrics"]
    assert "group" in zero_shot["targets"]
    assert set(zero_shot["skipped"]) == {
        "target regions", "lesion level", "lesion detection", "lesion-ablated controls",
    }  # fmt: skip
    scores = out["test_scan_scores"]
    test_scans = set(out["splits"].loc[out["splits"]["split"] == "test", "scan_id"])
    assert set(scores["scan_id"]) == test_scans
    assert ((scores["prob_control"] + scores["prob_patient"]) - 1).abs().max() < 1e-6
    assert "no lesion information" in out["report"]


def test_a_cohort_left_without_any_target_fails_before_training(bids_without_lesions):
    """With the default targets (the phantom's diagnosis) and no lesions nothing can be scored:
    the alignment stops before training and names the parameters to set."""
    pipeline = data_engineering() + pretraining() + alignment()
    with pytest.raises(ValueError, match="No zero-shot target remains") as error:
        run_in_memory(pipeline, bids_without_lesions, overrides=bids_parameters())
    assert "evaluation.targets" in str(error.value)
    assert "target diagnosis: the scans table has no column 'diagnosis'" in str(error.value)
