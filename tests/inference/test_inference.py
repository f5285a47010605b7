"""The inference pipeline on new scans, images only: predictions for every readable scan,
every bad one listed, evidence maps on the input grid, and bundles it cannot honour refused."""

import copy

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from kedro_datasets.partitions import PartitionedDataset

from mriclip.datasets import NiftiDataset
from mriclip.inference import IncompatibleBundleError, inference_spec
from mriclip.models.encoders import build_image_encoder
from mriclip.models.factory import clip_model_bundle, create_clip_model
from mriclip.phantom import generate_cohort
from mriclip.pipelines.inference import create_pipeline
from tests.pipelines.helpers import load_parameters, run_in_memory

PREPROCESSING = {
    "target_spacing": [4.0, 4.0, 4.0],
    "target_shape": [32, 32, 32],
    "fit": "resize_longest",
    "foreground_fraction": 0.05,
    "crop_margin": 1,
    "clip_percentile": 99.0,
    "n4_bias_correction": False,
    "n4_shrink_factor": 4,
    "n4_iterations": [50, 50, 30],
    "registration": "none",
    "registration_template": "icbm152",
    "registration_spacing_mm": 4.0,
    "registration_iterations": 100,
}
SPEC = {
    "targets": {
        "regions": {
            "kind": "lesion",
            "classes": ["frontal", "parietal", "temporal", "occipital", "cerebellar"],
            "templates": ["There is a lesion in the {region} section."],
            "negative_templates": ["There is no lesion in the {region} section."],
            "none_templates": ["No lesion is visible in this section."],
        },
        "diagnosis": {
            "kind": "scan",
            "column": "diagnosis",
            "classes": ["atrophy", "none"],
            "templates": ["The diagnosis is {value}."],
            "negative_templates": [],
        },
    }
}


@pytest.fixture(scope="module")
def bundle():
    encoder = build_image_encoder("resnet", filters=4, levels=4, subunits=1)
    model = create_clip_model(encoder, {"max_length": 32}, {"embed_dim": 32})
    inference = {"preprocessing": PREPROCESSING, "mode": "patch", "patch_size": 16,
                 "zero_shot": SPEC}  # fmt: skip
    return clip_model_bundle(
        model, {"max_length": 32}, {"embed_dim": 32}, {"name": "clip"}, inference
    )


@pytest.fixture(scope="module")
def new_scans():
    cohort = generate_cohort(
        {"seed": 21, "n_patients": 3, "n_scans": 3, "template_spacing_mm": 4.0,
         "voxel_spacing_mm": [3.5, 4.5], "ablated_twins": False}
    )  # fmt: skip
    images = {name: (lambda image=image: image) for name, image in cohort.images.items()}
    empty = nib.Nifti1Image(np.zeros((30, 30, 30), np.float32), np.eye(4))
    images["blank.nii.gz"] = lambda: empty  # readable, but nothing to preprocess

    def truncated():
        raise OSError("unexpected end of gzip file")

    images["broken.nii.gz"] = truncated
    return cohort, images


def run_inference(bundle, images, scans=None, stride=None):
    evaluation = load_parameters()["evaluation"]
    if stride is not None:  # every patch, overlapping: the maps cover the whole grid
        evaluation["scan_scoring"].update(stride=stride, min_foreground_fraction=0.0)
    return run_in_memory(
        create_pipeline(),
        {
            "clip_model": bundle,
            "inference_images": images,
            "inference_scans": pd.DataFrame() if scans is None else scans,
        },
        overrides={"evaluation": evaluation},
    )


def test_every_readable_scan_gets_predictions_and_bad_ones_are_listed(bundle, new_scans):
    cohort, images = new_scans
    scans = pd.DataFrame({"scan_id": ["P001_S1", "ghost"], "site": ["A", "B"]})
    out = run_inference(bundle, images, scans)
    predictions = out["scan_predictions"]
    assert sorted(predictions["scan_id"]) == sorted(cohort.scans["scan_id"])
    probabilities = predictions.filter(like="prob_")
    assert {"prob_frontal", "prob_cerebellar", "prob_atrophy", "prob_none"} <= set(probabilities)
    assert ((probabilities >= 0) & (probabilities <= 1)).all().all()
    assert set(predictions["predicted_diagnosis"]) <= {"atrophy", "none"}
    problems = out["inference_problems"]
    listed = set(problems["item"])
    assert "broken.nii.gz" in listed and "blank.nii.gz" in listed
    assert "scans.csv scan_id 'ghost'" in listed
    assert "site" in out["inference_catalog"].columns

    embeddings = out["scan_embeddings"]
    assert len(embeddings) == len(predictions)
    vectors = embeddings.filter(like="image_").to_numpy()
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, rtol=1e-5)

    queries = out["query_results"]
    assert set(queries["query"]) == set(load_parameters()["inference"]["queries"])
    first = queries[queries["query"] == queries["query"].iloc[0]]
    assert first["rank"].tolist() == [1, 2, 3] and first["score"].is_monotonic_decreasing


def test_evidence_maps_lie_on_the_input_grid(bundle, new_scans):
    cohort, images = new_scans
    # Overlapping patches (stride below the patch size) cover the whole head.
    out = run_inference(bundle, {k: v for k, v in images.items() if k.startswith("P")}, stride=8)
    for name, image in cohort.images.items():
        evidence = out["evidence_maps"][name]()
        np.testing.assert_array_equal(evidence.affine, image.affine)
        assert evidence.shape == (*image.shape, 1 + 5)  # lesion evidence + one map per region
        data = np.asarray(evidence.dataobj)
        assert data.min() >= 0 and data.max() <= 1
        voxels = np.asanyarray(image.dataobj)
        head = voxels > 0.2 * np.percentile(voxels, 99)
        # On the right voxels: the maps cover the head, and leave the air around it empty.
        assert (data[..., 0][head] > 0).mean() > 0.99
        assert data[0, 0, 0, 0] == 0 and data[-1, -1, -1, 0] == 0


def test_evidence_maps_are_kept_small_and_written_as_8_bits_that_read_back_as_probabilities(
    bundle, new_scans, tmp_path
):
    cohort, images = new_scans
    out = run_inference(bundle, {k: v for k, v in images.items() if k.startswith("P")}, stride=8)
    maps = out["evidence_maps"]
    # The catalog's entry (a PartitionedDataset of NIfTI files) makes each map as it writes it.
    PartitionedDataset(path=str(tmp_path), filename_suffix="",
                       dataset={"type": NiftiDataset, "save_args": {"compresslevel": 1}}
                       ).save(maps)  # fmt: skip
    for name, evidence in maps.items():
        kept = sum(np.asarray(value).nbytes for value in vars(evidence).values())
        image = evidence()
        assert kept < np.asarray(image.dataobj).nbytes / 50  # kilobytes, not the map's megabytes
        saved = nib.load(tmp_path / name)
        assert saved.get_data_dtype() == np.uint8
        values = np.asarray(image.dataobj)
        step = (values.max() - values.min()) / 255
        np.testing.assert_allclose(saved.get_fdata(), values, atol=step / 2 + 1e-6)
        np.testing.assert_array_equal(saved.affine, image.affine)


def test_a_bundle_without_sequences_reads_one_image_per_scan(bundle):
    assert "sequences" not in bundle["inference"]  # as bundles saved before they were recorded
    assert inference_spec(bundle).sequences is None


def test_inference_refuses_bundles_it_cannot_reproduce(bundle):
    older = {key: value for key, value in bundle.items() if key != "inference"}
    with pytest.raises(IncompatibleBundleError, match="no 'inference' settings"):
        inference_spec(older)
    newer = copy.deepcopy(bundle)
    newer["inference"]["preprocessing"]["skull_strip"] = True
    with pytest.raises(IncompatibleBundleError, match=r"\['skull_strip'\].*does not know"):
        inference_spec(newer)
    partial = copy.deepcopy(bundle)
    del partial["inference"]["preprocessing"]["target_spacing"]
    with pytest.raises(IncompatibleBundleError, match="does not record.*target_spacing"):
        inference_spec(partial)
    too_big = copy.deepcopy(bundle)
    too_big["inference"]["patch_size"] = 64
    with pytest.raises(IncompatibleBundleError, match="patch size 64 exceeds"):
        inference_spec(too_big)
    elsewhere = copy.deepcopy(bundle)
    elsewhere["inference"]["preprocessing"].update(
        registration="affine", registration_template="/nowhere/template.nii.gz"
    )
    with pytest.raises(IncompatibleBundleError, match="registered to the template.*not avail"):
        inference_spec(elsewhere)


def test_the_bundles_calibration_maps_the_probabilities_and_the_predictions(bundle, new_scans):
    from mriclip.evaluation.calibration import calibrated

    _, images = new_scans
    regions = [f"prob_{region}" for region in SPEC["targets"]["regions"]["classes"]]
    platt = {"slope": 2.5, "intercept": 1.5, "columns": regions}
    calibration = {"method": "platt", "targets": {"regions": platt}, "skipped": {}}
    with_map = copy.deepcopy(bundle)
    with_map["inference"]["calibration"] = calibration
    plain = run_inference(bundle, images)["scan_predictions"].set_index("scan_id")
    mapped = run_inference(with_map, images)["scan_predictions"].set_index("scan_id")
    np.testing.assert_allclose(mapped[regions], calibrated(plain[regions].to_numpy(), platt))
    np.testing.assert_array_equal(mapped["prob_atrophy"], plain["prob_atrophy"])
    threshold = load_parameters()["evaluation"]["scan_scoring"]["threshold"]
    for scan_id, row in mapped.iterrows():
        expected = [c.removeprefix("prob_") for c in regions if row[c] >= threshold]
        assert (row["predicted_regions"] or "") == ";".join(expected), scan_id


def test_a_predictor_refuses_fewer_than_one_worker(bundle):
    from mriclip.predictor import Predictor

    evaluation = load_parameters()["evaluation"]
    scoring = {"scan_scoring": evaluation["scan_scoring"], "prompts": evaluation["prompts"]}
    with pytest.raises(ValueError, match="inference workers must be 1 or more, got 0"):
        Predictor.from_bundle(bundle, scoring, "cpu", None, workers=0)
