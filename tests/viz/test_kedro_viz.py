"""kedro-viz reads like the project: a `kedro viz run` server on a copy of the project shows
the layers in data order, one collapsible group per pipeline, the node tags, and previews of
scans and figures; a headless Chromium renders the page."""

import base64
import io
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import time
import urllib.request

import nibabel as nib
import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from mriclip.datasets import FigurePNGDataset, NiftiDataset
from tests.pipelines.helpers import copy_project

pytest.importorskip("kedro_viz", reason="kedro-viz (the viz extra) is not installed")

PIPELINES = ["demo_data", "data_engineering", "pretraining", "alignment", "evaluation", "reporting"]
#: kedro-viz orders layers by the data flow (splits, primary, feed the lesion-ablated
#: twins, model_input).
LAYERS = ["raw", "intermediate", "primary", "model_input", "models", "model_output", "reporting"]
STARTUP_SECONDS = 120


def free_port() -> int:
    """A free TCP port below 49152 (kedro-viz refuses the ephemeral range the OS hands out)."""
    for port in random.Random(os.getpid()).sample(range(20000, 49000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free TCP port between 20000 and 49000")


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def write_sample_data(project):
    """One scan and one figure, so their previews have something to show."""
    volume = np.random.default_rng(0).normal(size=(16, 18, 14)).astype(np.float32)
    scan = project / "data" / "01_raw" / "images" / "S0.nii.gz"
    NiftiDataset(filepath=str(scan)).save(nib.Nifti1Image(volume, np.eye(4)))
    figure = Figure(figsize=(3, 3))
    figure.subplots().plot([0, 1], [0, 1])
    version = "2026-01-01T00.00.00.000Z"
    FigurePNGDataset(
        filepath=str(project / "data" / "08_reporting" / "roc.png" / version / "roc.png")
    ).save(figure)


@pytest.fixture(scope="module")
def viz(tmp_path_factory):
    """The base URL of `kedro viz run` on a copy of the project."""
    project = copy_project(tmp_path_factory.mktemp("viz_project"))
    write_sample_data(project)
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(project / "src"),
        "MPLBACKEND": "Agg",
        "DO_NOT_TRACK": "1",  # kedro-telemetry: never phone home from a test
        "KEDRO_DISABLE_TELEMETRY": "true",
    }
    log = open(project / "viz.log", "w")  # noqa: SIM115 - open while the server runs
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "kedro",
            "viz",
            "run",
            "--no-browser",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        cwd=project,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_SECONDS
        while True:
            try:
                get_json(f"{url}/api/main")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"kedro viz did not start:\n{(project / 'viz.log').read_text()}")
                time.sleep(1)
        yield url
    finally:
        server.terminate()
        server.wait(timeout=30)
        log.close()


@pytest.fixture(scope="module")
def main(viz):
    return get_json(f"{viz}/api/main")


def nodes_named(main, kind):
    return {node["name"]: node for node in main["nodes"] if node["type"] == kind}


def test_layers_follow_the_data_folders(main):
    assert main["layers"] == LAYERS
    data = nodes_named(main, "data")
    assert data["raw_images"]["layer"] == "raw"
    assert data["preprocessed_volumes"]["layer"] == "model_input"
    assert data["clip_model"]["layer"] == "models"
    assert data["zero_shot_metrics"]["layer"] == "reporting"
    # every dataset with a catalog entry has one (run_metadata is put in by a hook)
    assert {name for name, node in data.items() if node["layer"] is None} == {"run_metadata"}


def test_each_pipeline_is_a_group(main):
    groups = main["modular_pipelines"]
    assert set(groups) == {"__root__", *PIPELINES}
    root_groups = {
        c["id"] for c in groups["__root__"]["children"] if c["type"] == "modularPipeline"
    }
    assert root_groups == set(PIPELINES)
    for task in nodes_named(main, "task").values():
        assert task["modular_pipelines"] == [task["full_name"].split(".")[0]]
    data = {node["id"]: node["name"] for node in main["nodes"]}
    alignment = groups["alignment"]
    assert {data[i] for i in alignment["outputs"]} == {"clip_model", "alignment_history"}
    assert "scan_sentences" in {data[i] for i in alignment["inputs"]}


def test_nodes_carry_tags(main):
    assert {"gpu", "slow", "training", "figures", "report", "metrics"} <= {
        tag["id"] for tag in main["tags"]
    }
    tasks = nodes_named(main, "task")
    assert {"gpu", "slow"} <= set(tasks["train_clip_model"]["tags"])
    assert "report" in tasks["render_report"]["tags"]


def test_tuning_is_its_own_group(viz):
    tuning = get_json(f"{viz}/api/pipelines/tuning")
    assert "tuning" in tuning["modular_pipelines"]


@pytest.mark.parametrize("dataset", ["raw_images", "roc_figure"])
def test_scans_and_figures_preview_as_png(viz, main, dataset):
    node_id = nodes_named(main, "data")[dataset]["id"]
    details = get_json(f"{viz}/api/nodes/{node_id}")
    assert details["preview_type"] == "ImagePreview"
    png = base64.b64decode(details["preview"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    pytest.skip("no Chromium installed (apt-get install chromium)")


def test_page_renders_in_headless_chromium(viz, tmp_path):
    screenshot = tmp_path / "kedro-viz.png"
    subprocess.run(
        [
            chromium(),
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}",
            f"--screenshot={screenshot}",
            "--window-size=1400,900",
            "--virtual-time-budget=15000",
            f"{viz}/",
        ],
        check=True,
        capture_output=True,
        timeout=120,
    )
    pixels = imread(io.BytesIO(screenshot.read_bytes()))
    assert pixels.shape[:2] == (900, 1400)
    assert pixels[..., :3].std() > 0.02  # drawn, not a blank page
