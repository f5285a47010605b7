"""The demo_data pipeline: the phantom cohort through Kedro, in memory and through the catalog."""

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from mriclip.phantom import PhantomConfig, generate_cohort
from mriclip.pipelines.data_engineering.pipeline import create_pipeline as data_engineering
from mriclip.pipelines.demo_data.pipeline import create_pipeline
from tests.pipelines.helpers import PROJECT, load_parameters, run_in_memory

RAW_ENTRIES = ("raw_images", "raw_labels", "raw_scans", "raw_lesions", "raw_ablated_images")


@pytest.fixture(scope="module")
def test_params():
    return load_parameters("test")["demo_data"]


def test_pipeline_outputs_the_raw_entries_of_the_test_cohort(test_params):
    out = run_in_memory(create_pipeline(), {"raw_scans_on_disk": pd.DataFrame()})
    assert set(out) == set(RAW_ENTRIES)
    scans, lesions = out["raw_scans"], out["raw_lesions"]
    assert len(scans) == test_params["n_scans"]
    assert scans["patient_id"].nunique() == test_params["n_patients"]
    expected_keys = {f"{scan_id}.nii.gz" for scan_id in scans["scan_id"]}
    assert set(out["raw_images"]) == set(out["raw_labels"]) == expected_keys
    assert set(out["raw_ablated_images"]) == expected_keys
    assert all(isinstance(image, nib.Nifti1Image) for image in out["raw_images"].values())
    assert set(lesions["scan_id"]) <= set(scans["scan_id"])
    low, high = test_params["lesions_per_scan"]
    assert lesions.groupby("scan_id").size().between(low, high).all()
    # The test environment's coarse spacing reached the volumes.
    spacing_low, spacing_high = test_params["voxel_spacing_mm"]
    zooms = np.array([image.header.get_zooms() for image in out["raw_images"].values()])
    assert ((zooms >= spacing_low - 1e-6) & (zooms <= spacing_high + 1e-6)).all()


def raw_catalog(root: Path) -> DataCatalog:
    """The project's own raw_* catalog entries, with their paths moved under ``root``."""
    entries = yaml.safe_load((PROJECT / "conf" / "base" / "catalog.yml").read_text())
    config = {}
    for name in [*RAW_ENTRIES, "raw_scans_on_disk"]:
        entry = dict(entries[name])
        key = "path" if "path" in entry else "filepath"
        entry[key] = str(root / entry[key])
        config[name] = entry
    return DataCatalog.from_config(config)


def test_cohort_round_trips_through_the_catalog_and_feeds_data_engineering(tmp_path, test_params):
    catalog = raw_catalog(tmp_path)
    catalog["params:demo_data"] = MemoryDataset(test_params)
    SequentialRunner().run(create_pipeline(), catalog)

    settings = {k: v for k, v in test_params.items() if k != "overwrite_existing"}
    expected = generate_cohort(PhantomConfig.from_params(settings))
    images_dir = tmp_path / "data" / "01_raw" / "images"
    assert sorted(p.name for p in images_dir.iterdir()) == sorted(expected.images)
    loaded_images = catalog.load("raw_images")
    loaded_labels = catalog.load("raw_labels")
    for key, image in expected.images.items():
        reloaded = loaded_images[key]()
        np.testing.assert_array_equal(np.asanyarray(reloaded.dataobj), image.dataobj)
        assert reloaded.get_data_dtype() == image.get_data_dtype()
        np.testing.assert_allclose(reloaded.affine, image.affine, atol=1e-5)
        np.testing.assert_array_equal(
            np.asanyarray(loaded_labels[key]().dataobj), expected.labels[key].dataobj
        )
    pd.testing.assert_frame_equal(catalog.load("raw_scans"), expected.scans)
    pd.testing.assert_frame_equal(catalog.load("raw_lesions"), expected.lesions, check_dtype=False)

    # What the phantom writes is what the next pipeline accepts: every scan is valid and every
    # lesion arrives, except tiny ones the test's very coarse grid (~7 mm voxels) cannot hold,
    # which must be listed as problems, not dropped silently.
    inputs = {name: catalog.load(name) for name in RAW_ENTRIES}
    out = run_in_memory(data_engineering(), inputs)
    assert (out["nifti_catalog"]["status"] == "ok").all()
    problems = out["catalog_problems"]
    assert set(problems["stage"]) <= {"preprocessing"}
    assert problems["problem"].str.contains("absent from the label map").all()
    assert len(out["lesion_table"]) + len(problems) == len(expected.lesions)
    # The phantom's twins are the controls' exact counterfactuals, on the scans' own grids.
    assert set(out["ablation_report"]["method"]) == {"counterfactual"}
    for scan_id, twin in out["lesion_ablated_volumes"].items():
        assert twin().shape == out["preprocessed_volumes"][scan_id]().shape


def test_base_parameters_are_the_library_defaults():
    """conf/base documents the defaults; other environments rely on them for omitted keys."""
    base = yaml.safe_load((PROJECT / "conf" / "base" / "parameters_demo_data.yml").read_text())
    settings = {k: v for k, v in base["demo_data"].items() if k != "overwrite_existing"}
    assert PhantomConfig.from_params(settings) == PhantomConfig()


def test_a_users_own_scans_table_is_not_overwritten(test_params):
    from mriclip.pipelines.demo_data.nodes import generate_phantom_cohort

    own = pd.DataFrame({"scan_id": ["sub-01_ses-1"], "patient_id": ["sub-01"]})
    with pytest.raises(ValueError, match="Refusing to overwrite"):
        generate_phantom_cohort(test_params, own)
    overwrite = {**test_params, "overwrite_existing": True}
    images, _, scans, _, _ = generate_phantom_cohort(overwrite, own)
    assert "sub-01_ses-1" not in set(scans["scan_id"])
    # re-running over this phantom's own table is fine
    assert len(generate_phantom_cohort(test_params, scans)[0]) == len(images)


@pytest.mark.parametrize("workers", [0, 1.5, True, "2"])
def test_workers_must_be_a_whole_number_of_processes(test_params, workers):
    from mriclip.pipelines.demo_data.nodes import generate_phantom_cohort

    with pytest.raises(
        ValueError, match=f"demo_data.workers must be an integer >= 1, got {workers!r}"
    ):
        generate_phantom_cohort({**test_params, "workers": workers}, pd.DataFrame())
