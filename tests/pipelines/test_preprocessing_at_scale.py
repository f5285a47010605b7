"""preprocess_volumes on NIfTI files on disk, as the catalog gives them: in parallel (a process
pool or a Dask cluster) with the serial run's results, failures as problem rows, unchanged
scans reused from the cache, and volumes handed to the catalog as loaders."""

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriclip.datasets import MemmapArrayDataset, NiftiDataset, PartitionedDataset, ScanStore
from mriclip.imaging import collection
from mriclip.pipelines.data_engineering.nodes import (
    catalog_scans,
    preprocess_volumes,
    validate_lesions,
)
from mriclip.pipelines.pretraining.nodes import preprocess_unlabelled
from tests.conftest import REGIONS, make_raw_cohort
from tests.pipelines.helpers import load_parameters

# An all-zero image: the catalog lists it (a constant volume); the fixture's catalog lets it
# through, as it would a scan whose failure no check foresees, and preprocessing fails on it.
EMPTY = "S4"


def folder(path) -> dict:
    """Loaders of the NIfTI files in ``path``, as the raw_images catalog entry gives them."""
    return PartitionedDataset(path=str(path), dataset=NiftiDataset).load()


def write_cohort(root):
    images, labels, scans, lesions = make_raw_cohort(["P0", "P0", "P1", "P2", "P3", "P4"])
    for kind, files in (("images", images), ("labels", labels)):
        for name, load in files.items():
            image = load()
            if kind == "images" and name == f"{EMPTY}.nii.gz":
                image = nib.Nifti1Image(np.zeros(image.shape, np.float32), image.affine)
            NiftiDataset(filepath=str(root / kind / name)).save(image)
    return scans, lesions


@pytest.fixture
def on_disk(tmp_path):
    """Six scans with label maps written as NIfTI files, and the node's other inputs."""
    scans, lesions = write_cohort(tmp_path / "raw")
    params = load_parameters("test")["data_engineering"]
    images, labels = folder(tmp_path / "raw" / "images"), folder(tmp_path / "raw" / "labels")
    catalog, _ = catalog_scans(images, labels, scans, params)
    assert catalog.set_index("scan_id").loc[EMPTY, "status"].startswith("constant volume")
    catalog.loc[catalog["scan_id"] == EMPTY, "status"] = "ok"
    validated, _ = validate_lesions(scans, lesions, catalog, REGIONS, params)
    return tmp_path, {"catalog": catalog, "lesions": validated, "params": params}


def run(tmp_path, inputs, cache="cache", **settings):
    """The node on the files in tmp_path/raw with ``settings`` over the test parameters;
    without a time limit, so that ``workers=1`` preprocesses in this process (``counted``)."""
    params = {**inputs["params"], "scan_timeout_s": None, **settings}
    raw = tmp_path / "raw"
    return preprocess_volumes(
        folder(raw / "images"),
        folder(raw / "labels"),
        inputs["catalog"],
        inputs["lesions"],
        ScanStore(str(tmp_path / cache)),
        params,
    )


def arrays(loaders: dict) -> dict:
    return {scan_id: load() for scan_id, load in loaders.items()}


def assert_same(first, second):
    """The node's outputs agree: every array exactly, every table."""
    for loaders_a, loaders_b in zip(first[:2], second[:2], strict=True):
        a, b = arrays(loaders_a), arrays(loaders_b)
        assert list(a) == list(b)
        for scan_id in a:
            np.testing.assert_array_equal(a[scan_id], b[scan_id])
    for table_a, table_b in zip(first[2:], second[2:], strict=True):
        pd.testing.assert_frame_equal(table_a, table_b)


@pytest.fixture
def counted(monkeypatch):
    """One entry per preprocess_scan call (in this process: workers=1); True for an empty
    image, which fails inside (a failure is never cached, so every run retries it)."""
    calls = []
    original = collection.preprocess_scan

    def counting(image, data, label, config, *sequences):
        calls.append(not data.any())
        return original(image, data, label, config, *sequences)

    monkeypatch.setattr(collection, "preprocess_scan", counting)
    return calls


def test_two_workers_give_the_serial_result_and_a_failing_scan_is_a_problem_row(on_disk):
    tmp_path, inputs = on_disk
    serial = run(tmp_path, inputs, "serial", workers=1)
    parallel = run(tmp_path, inputs, "parallel", workers=2)
    assert_same(serial, parallel)
    volumes, labels, report, lesion_table, problems = parallel
    done = [f"S{i}" for i in range(6) if f"S{i}" != EMPTY]
    assert list(volumes) == list(labels) == report["scan_id"].tolist() == done
    assert sorted(set(lesion_table["scan_id"])) == done and len(lesion_table) == 2 * len(done)
    failed = problems.set_index("scan_id").loc[EMPTY]
    assert failed["stage"] == "preprocessing" and failed["item"] == f"{EMPTY}.nii.gz"
    assert failed["problem"] == (
        "preprocessing failed: ValueError: volume has no positive voxels (empty or constant image)"
    )
    assert list(problems.columns) == ["stage", "scan_id", "item", "problem", "fix"]


def test_the_node_returns_loaders_that_the_catalog_saves_one_at_a_time(on_disk):
    tmp_path, inputs = on_disk
    volumes, labels, *_ = run(tmp_path, inputs, workers=2)
    assert all(callable(v) and not isinstance(v, np.ndarray) for v in volumes.values())
    output = PartitionedDataset(
        path=str(tmp_path / "volumes"),
        dataset=MemmapArrayDataset,
        filename_suffix=".npy",
        overwrite=True,
    )
    output.save(volumes)
    saved = arrays(output.load())
    assert sorted(saved) == sorted(volumes)
    for scan_id, load in volumes.items():
        np.testing.assert_array_equal(saved[scan_id], load())
        assert saved[scan_id].shape == (32, 32, 32) and saved[scan_id].dtype == np.float32


def test_an_unchanged_rerun_reuses_every_scan(on_disk, counted, caplog):
    tmp_path, inputs = on_disk
    first = run(tmp_path, inputs, workers=1)
    assert len(counted) == 6
    counted.clear()
    with caplog.at_level("INFO", logger="mriclip.imaging.collection"):
        second = run(tmp_path, inputs, workers=1)
    assert counted == [True]  # only the empty scan, which failed, is tried again
    assert "5 scans reused unchanged, 0 processed, 1 failed" in caplog.text
    assert_same(first, second)


def test_a_changed_file_redoes_that_scan_only(on_disk, counted):
    tmp_path, inputs = on_disk
    first = run(tmp_path, inputs, workers=1)
    image_file = tmp_path / "raw" / "images" / "S2.nii.gz"
    image = NiftiDataset(filepath=str(image_file)).load()
    changed = np.asanyarray(image.dataobj) * 2.0 + 1.0
    NiftiDataset(filepath=str(image_file)).save(nib.Nifti1Image(changed, image.affine))
    counted.clear()
    second = run(tmp_path, inputs, workers=1)
    assert sorted(counted) == [False, True]  # S2, and the empty scan that failed before
    volumes_a, volumes_b = arrays(first[0]), arrays(second[0])
    report_a, report_b = (table.set_index("scan_id") for table in (first[2], second[2]))
    assert report_a.loc["S2", "clip_value"] != report_b.loc["S2", "clip_value"]
    for scan_id in ("S0", "S1", "S3", "S5"):
        np.testing.assert_array_equal(volumes_a[scan_id], volumes_b[scan_id])
        pd.testing.assert_series_equal(report_a.loc[scan_id], report_b.loc[scan_id])


def test_a_changed_setting_redoes_every_scan(on_disk, counted):
    tmp_path, inputs = on_disk
    run(tmp_path, inputs, workers=1)
    counted.clear()
    preprocessing = {**inputs["params"]["preprocessing"], "crop_margin": 3}
    _, _, report, *_ = run(tmp_path, inputs, workers=1, preprocessing=preprocessing)
    assert len(counted) == 6 and len(report) == 5


def test_unlabelled_scans_stream_and_are_reused_too(tmp_path, counted):
    write_cohort(tmp_path / "raw")
    parameters = load_parameters("test")["data_engineering"]
    params = {**parameters, "workers": 1, "scan_timeout_s": None}
    cache = ScanStore(str(tmp_path / "cache"))
    volumes, problems = preprocess_unlabelled(folder(tmp_path / "raw" / "images"), cache, params)
    assert sorted(volumes) == [f"unlabelled_S{i}" for i in range(6) if f"S{i}" != EMPTY]
    assert all(callable(v) for v in volumes.values())
    assert volumes["unlabelled_S0"]().shape == (32, 32, 32)
    assert problems["scan_id"].tolist() == [EMPTY]  # listed by the catalog: a constant volume
    assert problems["stage"].tolist() == ["unlabelled_catalog"]
    assert counted == [False] * 5  # the empty scan never reached preprocessing
    counted.clear()
    again, _ = preprocess_unlabelled(folder(tmp_path / "raw" / "images"), cache, params)
    assert counted == [] and sorted(again) == sorted(volumes)  # every scan reused


def test_a_dask_cluster_gives_the_serial_result(on_disk):
    distributed = pytest.importorskip(
        "distributed", reason="dask.distributed is not installed (pip install 'mriclip[dask]')"
    )
    tmp_path, inputs = on_disk
    serial = run(tmp_path, inputs, "serial", workers=1)
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        on_dask = run(tmp_path, inputs, "dask", dask_scheduler=cluster.scheduler_address)
    assert_same(serial, on_dask)
    assert EMPTY in set(on_dask[4]["scan_id"])
