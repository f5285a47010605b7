"""notebooks/walkthrough.ipynb runs from top to bottom on the outputs of the test run, so it
cannot go stale: every catalog entry, column and call it shows still exists."""

import shutil

import nbformat
import pandas as pd
from nbclient import NotebookClient

from tests.pipelines.helpers import PROJECT


def test_the_walkthrough_notebook_runs_on_the_test_configuration(
    default_run, tmp_path, monkeypatch
):
    # A copy: the notebook's inference run adds new scans and outputs, which the other tests
    # of the default run must not see, and tracks (with kedro-mlflow) into the copy.
    project = tmp_path / "project"
    shutil.copytree(default_run, project, ignore=shutil.ignore_patterns("__pycache__"))
    tracking = project / "conf" / "test" / "mlflow.yml"
    tracking.write_text(tracking.read_text().replace(str(default_run), str(project)))
    (project / "notebooks").mkdir()
    notebook = nbformat.read(PROJECT / "notebooks" / "walkthrough.ipynb", as_version=4)
    monkeypatch.setenv("KEDRO_ENV", "test")
    monkeypatch.setenv("DO_NOT_TRACK", "1")  # kedro-telemetry: never phone home from a test
    client = NotebookClient(
        notebook,
        timeout=600,
        kernel_name="python3",
        resources={"metadata": {"path": str(project / "notebooks")}},
    )
    client.execute()  # raises CellExecutionError, with the cell and traceback, if a cell fails

    outputs = [output for cell in notebook.cells for output in cell.get("outputs", [])]
    images = [output for output in outputs if "image/png" in output.get("data", {})]
    assert len(images) >= 3  # the scan, the evidence figure, the new scan's evidence map
    predictions = sorted((project / "data" / "07_model_output" / "scan_predictions.csv").glob("*"))
    table = pd.read_csv(predictions[-1] / "scan_predictions.csv")
    assert list(table["scan_id"]) == ["new_scan"]
    assert list((project / "data" / "07_model_output" / "evidence_maps").glob("new_scan*"))
