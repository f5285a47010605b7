"""data_engineering with `--params data_engineering.source=bids`: a BIDS dataset flows through
the same validation and preprocessing as the file layout."""

import json
import shutil

import numpy as np
import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from mriclip.datasets import BIDSDataset
from mriclip.phantom import PhantomConfig, generate_cohort
from mriclip.pipelines.data_engineering.pipeline import create_pipeline
from tests.bids_trees import nibabel_tree, phantom_tree
from tests.pipelines.helpers import PROJECT, load_parameters, run_in_memory


def test_a_bids_tree_of_real_anatomy_runs_through_data_engineering(tmp_path):
    nibabel_tree(tmp_path / "bids")
    parameters = load_parameters("test")["data_engineering"]
    inputs = {
        "raw_images": {},
        "raw_labels": {},
        "raw_scans": pd.DataFrame(),
        "raw_lesions": pd.DataFrame(),
        "bids_dataset": BIDSDataset(path=str(tmp_path / "bids")).load(),
    }
    out = run_in_memory(
        create_pipeline(),
        inputs,
        overrides={"data_engineering": {**parameters, "source": "bids"}},
    )
    scans = ["sub-01_ses-1", "sub-01_ses-2", "sub-02", "sub-05", "sub-06"]
    assert (out["nifti_catalog"]["status"] == "ok").all()
    assert sorted(out["nifti_catalog"]["scan_id"]) == scans
    assert sorted(out["preprocessed_volumes"]) == scans
    assert list(out["preprocessed_labels"]) == ["sub-02"]
    problems = out["catalog_problems"]
    bids_items = set(problems.loc[problems["stage"] == "bids", "item"])
    assert bids_items == {
        "participants.tsv: sub-03",
        "participants.tsv: sub-04",
        "sub-07/anat/sub-07_T1w.nii.gz",
        "derivatives/lesions/sub-04/anat/sub-04_desc-lesion_mask.nii.gz",
    }
    sentences = out["scan_sentences"].set_index("scan_id")
    assert sentences.loc["sub-01_ses-2", "patient_id"] == "sub-01"
    assert sentences.loc["sub-01_ses-2", "regions"] == "frontal;parietal"
    assert sentences.loc["sub-01_ses-2", "sentence"].startswith("The age of the subject is 31.")
    # sub-02's age is n/a: its sentence is left out
    assert sentences.loc["sub-02", "sentence"].startswith("The gender of the patient is M.")
    splits = out["splits"]
    assert (splits.groupby("patient_id")["split"].nunique() == 1).all()  # sessions stay together


def test_the_phantom_written_as_bids_runs_with_the_source_parameter(tmp_path, monkeypatch):
    """A KedroSession in a fresh project copy, as `kedro run --pipeline data_engineering
    --params data_engineering.source=bids` runs it: no data/01_raw/images, no scans.csv."""
    shutil.copytree(PROJECT / "conf", tmp_path / "conf", ignore=shutil.ignore_patterns("local"))
    (tmp_path / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", tmp_path)
    shutil.copytree(PROJECT / "src", tmp_path / "src", ignore=shutil.ignore_patterns("__pycache__"))
    settings = {k: v for k, v in load_parameters("test")["demo_data"].items()}
    settings.pop("overwrite_existing")
    cohort = generate_cohort(PhantomConfig.from_params(settings))
    raw = tmp_path / "data" / "01_raw"
    lesions = phantom_tree(cohort, raw / "bids")
    lesions.to_csv(raw / "lesions.csv", index=False)

    monkeypatch.chdir(tmp_path)
    bootstrap_project(tmp_path)
    with KedroSession.create(
        project_path=tmp_path,
        env="test",
        runtime_params={"data_engineering": {"source": "bids"}},
    ) as session:
        session.run(pipeline_name="data_engineering")

    catalog = pd.read_csv(tmp_path / "data" / "02_intermediate" / "nifti_catalog.csv")
    assert (catalog["status"] == "ok").all() and len(catalog) == len(cohort.images)
    assert catalog["label_file"].notna().all()
    assert set(lesions["scan_id"]) <= set(catalog["scan_id"])  # lesion-free scans too
    assert catalog["scan_id"].str.fullmatch(r"sub-P\d+_ses-S\d").all()
    volumes = sorted((tmp_path / "data" / "05_model_input" / "volumes").glob("*.npy"))
    assert len(volumes) == len(cohort.images)
    assert np.load(volumes[0], mmap_mode="r").shape == (32, 32, 32)
    # every lesion arrives or is listed (tiny ones the coarse test grid cannot hold)
    problems = pd.read_csv(tmp_path / "data" / "08_reporting" / "catalog_problems.csv")
    lesion_table = pd.read_csv(tmp_path / "data" / "03_primary" / "lesion_table.csv")
    assert set(problems["stage"]) <= {"preprocessing"}
    assert len(lesion_table) + len(problems) == len(cohort.lesions)
    # clinical values arrive from participants.tsv (sex) and sessions.tsv (age) per scan
    sentences = pd.read_csv(tmp_path / "data" / "03_primary" / "scan_sentences.csv")
    expected = cohort.scans.assign(
        scan_id="sub-" + cohort.scans["patient_id"] + "_ses-S" + cohort.scans["course"].astype(str)
    ).set_index("scan_id")
    sentences = sentences.set_index("scan_id")
    assert sorted(sentences.index) == sorted(expected.index)
    assert (sentences["age"] == expected.loc[sentences.index, "age"]).all()
    assert (sentences["sex"] == expected.loc[sentences.index, "sex"]).all()

    # ... and on through alignment and evaluation, lesion-ablated controls included (no raw
    # twins in BIDS: the labelled lesions are inpainted).
    with KedroSession.create(
        project_path=tmp_path,
        env="test",
        runtime_params={
            "data_engineering": {"source": "bids"},
            "alignment": {"image_init": "random"},
        },
    ) as session:
        session.run(pipeline_names=["alignment", "evaluation"])
    ablation = pd.read_csv(tmp_path / "data" / "05_model_input" / "ablation_report.csv")
    assert set(ablation["method"]) == {"inpainted"}
    metrics_dir = tmp_path / "data" / "08_reporting" / "zero_shot_metrics.json"
    version = next(metrics_dir.iterdir())
    zero_shot = json.loads((version / "zero_shot_metrics.json").read_text())
    assert {"model", "lesion_ablated", "random"} <= set(zero_shot["scan_level"])
    assert "diagnosis" in zero_shot["targets"]
