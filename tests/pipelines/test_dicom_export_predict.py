"""From the scanner to a shareable model, through Kedro, in a copy of the default run's
project: two training scans and two new scans as DICOM series carrying a patient's name and
ID, the chain from data_engineering to the report, `kedro run --pipeline export`, the
inference pipeline, and `mriclip predict` in an empty folder. The DICOM scans predict as
the NIfTI files they were written from, predict reproduces the pipeline, pydicom's real MR
files are listed, and no output holds the identifiers."""

import gzip
import importlib.util
import io
import json
import logging
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import nibabel as nib
import pandas as pd
import pydicom.data
import pytest
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from tests.conftest import end_mlflow_runs
from tests.dicom_series import IDENTIFIERS, PATIENT_ID, write_series

TRAINING_AS_DICOM = ("P003_S1", "P004_S1")  # in the test cohort's training split
PYDICOM_SERIES = Path(pydicom.data.__file__).parent / "test_files" / "dicomdirtests" / "98892003"
CHAIN = ("data_engineering", "pretraining", "alignment", "evaluation", "reporting", "export",
         "inference")  # fmt: skip


class Collected(logging.Handler):
    """Every log record of the runs, formatted: logs are outputs too."""

    def __init__(self):
        super().__init__(level=logging.DEBUG)
        self.lines = []

    def emit(self, record):
        self.lines.append(self.format(record))


def latest(folder: Path) -> Path:
    return sorted(folder.iterdir())[-1] / folder.name


@pytest.fixture(scope="module")
def project(default_run, tmp_path_factory):
    root = tmp_path_factory.mktemp("dicom")
    project = shutil.copytree(
        default_run, root / "project", ignore=shutil.ignore_patterns("tracking")
    )
    (project / "tracking").mkdir()
    (project / "conf" / "test" / "mlflow.yml").write_text(
        f"server:\n  mlflow_tracking_uri: sqlite:///{project}/tracking/mlflow.db\n"
        "tracking:\n  experiment:\n    create_experiment_kwargs:\n"
        f"      artifact_location: {project}/tracking/artifacts\n"
    )
    raw = project / "data" / "01_raw"
    for scan_id in TRAINING_AS_DICOM:  # the NIfTI file becomes a DICOM series folder
        nifti = raw / "images" / f"{scan_id}.nii.gz"
        write_series(nib.load(nifti), raw / "images" / scan_id)
        nifti.unlink()
    test_scans = pd.read_csv(project / "data" / "03_primary" / "splits.csv")
    new = sorted(test_scans.loc[test_scans["split"] == "test", "scan_id"])[:2]
    inference = raw / "inference" / "images"
    inference.mkdir(parents=True)
    for scan_id in new:
        shutil.copy(raw / "images" / f"{scan_id}.nii.gz", inference)
        write_series(nib.load(inference / f"{scan_id}.nii.gz"), inference / f"{scan_id}_dicom")
    for folder in ("MR1", "MR2", "MR700"):  # read from the installed package at test time
        shutil.copytree(PYDICOM_SERIES / folder, inference / f"pydicom_{folder}")
    handler = Collected()
    logging.getLogger().addHandler(handler)
    end_mlflow_runs()
    try:
        with pytest.MonkeyPatch.context() as patch:
            patch.chdir(project)
            patch.setenv("DO_NOT_TRACK", "1")
            bootstrap_project(project)
            for pipeline in CHAIN:
                with KedroSession.create(project_path=project, env="test") as session:
                    session.run(pipeline_names=[pipeline])
                end_mlflow_runs()
    finally:
        logging.getLogger().removeHandler(handler)
    cli_dir = root / "elsewhere"  # no conf/, no data/: an empty folder
    cli_dir.mkdir()
    command = [sys.executable, "-m", "mriclip.console", "predict",
               "--model", str(project / "data" / "06_models" / "export"),
               "--images", str(inference), "--out", "out/predictions.csv",
               "--evidence-maps", "out/maps", "--workers", "2",  # a pool, no time limit
               "--queries", "a lesion in the frontal section"]  # fmt: skip
    cli = subprocess.run(command, cwd=cli_dir, capture_output=True, text=True, check=False)
    return {"project": project, "new": new, "logs": handler.lines, "cli": cli, "cli_dir": cli_dir}


def test_dicom_training_scans_are_catalogued_and_preprocessed(project):
    data = project["project"] / "data"
    catalog = pd.read_csv(data / "02_intermediate" / "nifti_catalog.csv").set_index("scan_id")
    for scan_id in TRAINING_AS_DICOM:
        assert catalog.loc[scan_id, "image_file"] == f"{scan_id}/"
        assert catalog.loc[scan_id, "status"] == "ok"
        assert (data / "05_model_input" / "volumes" / f"{scan_id}.npy").is_file()


def test_a_dicom_series_predicts_as_the_nifti_it_was_written_from(project):
    predictions = pd.read_csv(latest(project["project"] / "data" / "07_model_output" /
                                     "scan_predictions.csv")).set_index("scan_id")  # fmt: skip
    columns = [c for c in predictions.columns if c.startswith("prob_")]
    for scan_id in project["new"]:
        nifti, dicom = (
            predictions.loc[scan_id, columns],
            predictions.loc[f"{scan_id}_dicom", columns],
        )
        assert (nifti - dicom).abs().max() <= 0.01


def test_mriclip_predict_in_an_empty_folder_reproduces_the_pipeline(project):
    cli = project["cli"]
    assert cli.returncode == 0, cli.stderr
    out = project["cli_dir"] / "out"
    predicted = pd.read_csv(out / "predictions.csv")
    pipeline = pd.read_csv(latest(project["project"] / "data" / "07_model_output" /
                                  "scan_predictions.csv"))  # fmt: skip
    assert list(predicted.columns) == list(pipeline.columns)
    pd.testing.assert_frame_equal(predicted, pipeline, check_exact=False, atol=1e-5, rtol=0)
    assert sorted(p.name for p in (out / "maps").iterdir()) == sorted(
        f"{scan_id}.nii.gz" for scan_id in pipeline["scan_id"]
    )
    assert len(pd.read_csv(out / "queries.csv")) == len(pipeline)


def test_pydicoms_real_mr_series_are_listed_not_predicted(project):
    problems = pd.read_csv(project["cli_dir"] / "out" / "problems.csv")
    listed = set(problems["item"])
    assert {"pydicom_MR1/series1/", "pydicom_MR2/series2/", "pydicom_MR700/"} <= listed
    for item in ("pydicom_MR1/series1/", "pydicom_MR700/"):
        assert f"unusable: {item}:" in project["cli"].stderr
    pipeline_problems = pd.read_csv(latest(project["project"] / "data" / "08_reporting" /
                                           "inference_problems.csv"))  # fmt: skip
    assert listed <= set(pipeline_problems["item"])


def test_the_model_card_states_the_metrics_of_its_run(project):
    data = project["project"] / "data"
    metrics = json.loads(latest(data / "08_reporting" / "zero_shot_metrics.json").read_text())
    card = (data / "06_models" / "export" / "MODEL_CARD.md").read_text()
    overall = metrics["scan_level"]["model"]["overall"]
    low, high = overall["auc_macro_ci"]
    assert f"{overall['auc_macro']:.3f} [{low:.3f}, {high:.3f}]" in card


def texts_of(path: Path) -> list[bytes]:
    """The bytes of a file as a reader would see them: decompressed, tables as text."""
    raw = path.read_bytes()
    if path.name.endswith(".gz"):
        return [raw, gzip.decompress(raw)]
    if path.suffix == ".parquet":
        return [raw, pd.read_parquet(io.BytesIO(raw)).to_csv().encode()]
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            return [raw, *(archive.read(name) for name in archive.namelist())]
    return [raw]


def test_no_output_holds_the_patients_identifiers(project):
    root = project["project"]
    outputs = [
        p for folder in ("data", "tracking") for p in (root / folder).rglob("*") if p.is_file()
    ]
    outputs = [p for p in outputs if "01_raw" not in p.parts]  # the inputs hold them, of course
    outputs += [p for p in (project["cli_dir"] / "out").rglob("*") if p.is_file()]
    assert any(p.name == "report.html" for p in outputs) and len(outputs) > 50
    if importlib.util.find_spec("kedro_mlflow") is not None:  # the mlflow extra: MLflow too
        assert (root / "tracking" / "mlflow.db") in outputs
    streams = ["\n".join(project["logs"]), project["cli"].stdout, project["cli"].stderr]
    assert any("DICOM series" in line for line in project["logs"])  # the logs were collected
    for identifier in IDENTIFIERS:
        needle = identifier.lower().encode()
        found = [p for p in outputs if any(needle in text.lower() for text in texts_of(p))]
        assert not found, f"{identifier!r} in {found}"
        assert not any(identifier.lower() in stream.lower() for stream in streams)
    assert not any(b"doe^peter" in text.lower() for p in outputs for text in texts_of(p))
    # the search finds them where they are: in the input series
    series = root / "data" / "01_raw" / "images" / TRAINING_AS_DICOM[0]
    assert all(PATIENT_ID.encode() in path.read_bytes() for path in series.iterdir())
