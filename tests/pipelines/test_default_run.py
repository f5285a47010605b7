"""The whole default chain through Kedro, on the tiny `test` environment, in a fresh copy
of the project: demo data on disk, then every pipeline up to the report."""

import json

import pandas as pd


def only_version(folder):
    versions = sorted(folder.iterdir())
    assert len(versions) == 1, versions
    return versions[0] / folder.name


def test_default_pipeline_end_to_end(default_run):
    data = default_run / "data"
    assert len(list((data / "01_raw" / "images").glob("*.nii.gz"))) == 9
    catalog = pd.read_csv(data / "02_intermediate" / "nifti_catalog.csv")
    assert (catalog["status"] == "ok").all()
    assert len(list((data / "05_model_input" / "volumes").glob("*.npy"))) == 9
    summary = json.loads(
        only_version(data / "08_reporting" / "pretraining_summary.json").read_text()
    )
    assert summary["n_held_out_volumes"] > 0
    zero_shot = json.loads(
        only_version(data / "08_reporting" / "zero_shot_metrics.json").read_text()
    )
    assert zero_shot["scan_level"]["random"]["overall"]["auc_macro"] == 0.5
    assert {"model", "lesion_ablated", "before_alignment"} <= set(zero_shot["scan_level"])
    assert len(zero_shot["scan_level"]["model"]["overall"]["auc_macro_ci"]) == 2
    overall = zero_shot["scan_level"]["model"]["overall"]
    assert 0 <= overall["ece"] <= 1 and 0 <= overall["ece_uncalibrated"] <= 1
    assert zero_shot["environment"]["torch_threads"] >= 1
    assert "diagnosis" in zero_shot["targets"]
    twins = list((data / "05_model_input" / "lesion_ablated_volumes").glob("*.npy"))
    assert twins and len(twins) < 9  # the test split's scans only
    report = only_version(data / "08_reporting" / "report.html").read_text()
    assert "Scan-level zero-shot macro AUC" in report
    assert report.count("data:image/png;base64,") == 6
    assert "clip_model" in report  # the catalog versions the report came from
