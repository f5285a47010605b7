"""Inference with a model trained on multi-sequence scans: new scans are read by the training
data contract (``<scan_id>_<sequence>.nii.gz``), checked and preprocessed as in training, with
the bundle's missing-sequence rule; files that do not fit are listed, naming the files
expected."""

import copy
from functools import partial

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriclip.evaluation.embedding import embed_patches, scan_patches
from mriclip.imaging.preprocessing import PreprocessingConfig, preprocess_scan
from mriclip.inference import IncompatibleBundleError, inference_spec
from mriclip.models.factory import load_clip_model
from mriclip.pipelines import alignment, data_engineering, demo_data, inference
from tests.conftest import _loaded
from tests.pipelines.helpers import load_parameters, run_in_memory

SEQUENCES = ["t1", "t1ce", "t2", "flair"]


def as_loaders(images: dict) -> dict:
    """Images as a PartitionedDataset gives them: file name -> loader (picklable)."""
    return {name: partial(_loaded, image) for name, image in images.items()}


@pytest.fixture(scope="module")
def trained():
    """The test environment's phantom as four sequences per scan, through data_engineering
    and a few alignment steps: the bundle, the raw images and the training volumes."""
    params = load_parameters()
    overrides = {
        "demo_data": {**params["demo_data"], "sequences": SEQUENCES},
        "data_engineering": {**params["data_engineering"], "sequences": SEQUENCES},
        "alignment": {**params["alignment"], "image_init": "random"},
    }
    raw = run_in_memory(
        demo_data.create_pipeline(), {"raw_scans_on_disk": pd.DataFrame()}, overrides=overrides
    )
    inputs = {
        "raw_images": as_loaders(raw["raw_images"]),
        "raw_labels": as_loaders(raw["raw_labels"]),
        "raw_scans": raw["raw_scans"],
        "raw_lesions": raw["raw_lesions"],
        "pretrained_encoder": None,
    }
    out = run_in_memory(
        data_engineering.create_pipeline() + alignment.create_pipeline(),
        inputs,
        overrides=overrides,
    )
    return out["clip_model"], raw["raw_images"], out["preprocessed_volumes"]


def run_inference(bundle, images: dict, scans: pd.DataFrame | None = None) -> dict:
    return run_in_memory(
        inference.create_pipeline(),
        {
            "clip_model": bundle,
            "inference_images": as_loaders(images),
            "inference_scans": pd.DataFrame() if scans is None else scans,
        },
    )


def scan_embedding(bundle, volume: np.ndarray) -> np.ndarray:
    """A scan's embedding computed apart from inference: the normalised mean of its scoring
    patches' embeddings."""
    scoring = load_parameters()["evaluation"]["scan_scoring"]
    model = load_clip_model(bundle)
    size = min(bundle["inference"]["patch_size"], *volume.shape[-3:])
    starts = scan_patches(volume, size, scoring["stride"], scoring["min_foreground_fraction"])
    mean = embed_patches(model, volume, starts, size, scoring["batch_size"]).mean(axis=0)
    return mean / np.linalg.norm(mean)


def embedding_of(out: dict, scan_id: str) -> np.ndarray:
    return out["scan_embeddings"].set_index("scan_id").loc[scan_id].filter(like="image_").to_numpy()


def test_the_bundle_records_the_sequences_it_was_trained_with(trained):
    bundle, _, _ = trained
    assert bundle["inference"]["sequences"] == SEQUENCES
    assert bundle["inference"]["missing_sequences"] == "duplicate"
    assert bundle["config"]["image_encoder"]["in_channels"] == len(SEQUENCES)
    assert inference_spec(bundle).sequences.sequences == tuple(SEQUENCES)


def test_multi_sequence_scans_are_predicted_from_the_stack_training_made(trained):
    bundle, images, volumes = trained
    out = run_inference(bundle, images)
    predictions = out["scan_predictions"]
    assert sorted(predictions["scan_id"]) == sorted(volumes)  # one row per scan
    probabilities = predictions.filter(like="prob_")
    assert {"prob_frontal", "prob_cerebellar", "prob_any_lesion"} <= set(probabilities)
    assert ((probabilities >= 0) & (probabilities <= 1)).all().all()
    assert out["inference_problems"].empty
    # The same preprocessing as training's: the embedding of the stack data_engineering made.
    for scan_id in ["P001_S1", "P004_S2"]:
        expected = scan_embedding(bundle, volumes[scan_id]())
        np.testing.assert_allclose(embedding_of(out, scan_id), expected, atol=1e-5)
    assert set(out["query_results"]["scan_id"]) == set(volumes)
    assert sorted(out["evidence_maps"]) == sorted(f"{scan_id}.nii.gz" for scan_id in volumes)


def test_evidence_maps_lie_on_the_first_sequences_grid(trained):
    bundle, images, _ = trained
    scan_images = {name: image for name, image in images.items() if name.startswith("P002_S1")}
    t2 = scan_images["P002_S1_t2.nii.gz"]
    # The same voxels stored flipped along the first axis: another grid, the same world.
    flip = np.diag([-1.0, 1.0, 1.0, 1.0])
    flip[0, 3] = t2.shape[0] - 1
    scan_images["P002_S1_t2.nii.gz"] = nib.Nifti1Image(
        np.asarray(t2.dataobj)[::-1].copy(), t2.affine @ flip
    )
    out = run_inference(bundle, scan_images)
    assert list(out["scan_predictions"]["scan_id"]) == ["P002_S1"]
    note = out["inference_problems"].set_index("item").loc["P002_S1_t2.nii.gz"]
    assert note["stage"] == "sequences" and "resampled" in note["fix"]
    reference = scan_images["P002_S1_t1.nii.gz"]
    evidence = out["evidence_maps"]["P002_S1.nii.gz"]()
    np.testing.assert_array_equal(evidence.affine, reference.affine)
    assert evidence.shape == (*reference.shape, 1 + 5)  # lesion evidence + one map per region


def test_a_scan_missing_a_sequence_is_filled_by_the_bundles_rule_and_listed(trained):
    bundle, images, _ = trained
    kept = {name: image for name, image in images.items() if name != "P003_S1_t2.nii.gz"}
    out = run_inference(bundle, kept)
    assert "P003_S1" in set(out["scan_predictions"]["scan_id"])
    listed = out["inference_problems"].set_index("scan_id").loc["P003_S1"]
    assert listed["stage"] == "sequences" and "missing sequence(s) ['t2']" in listed["problem"]
    assert "images/P003_S1_t2.nii.gz" in listed["fix"] and "duplicate" in listed["fix"]
    assert "set it to skip" not in listed["fix"]  # the rule is the model's, not a parameter
    # duplicate: the scan's first sequence stands in for its t2, preprocessed as a stack.
    t1, t1ce, flair = (images[f"P003_S1_{name}.nii.gz"] for name in ["t1", "t1ce", "flair"])
    config = PreprocessingConfig(**bundle["inference"]["preprocessing"])
    channels = [np.asarray(image.dataobj) for image in (t1ce, t1, flair)]
    stack, _, _ = preprocess_scan(t1, np.asarray(t1.dataobj), None, config, channels)
    np.testing.assert_allclose(
        embedding_of(out, "P003_S1"), scan_embedding(bundle, stack), atol=1e-5
    )


def test_a_scan_missing_a_sequence_is_left_out_when_the_bundle_says_skip(trained):
    bundle, images, _ = trained
    skipping = copy.deepcopy(bundle)
    skipping["inference"]["missing_sequences"] = "skip"
    kept = {name: image for name, image in images.items() if name != "P003_S1_t2.nii.gz"}
    out = run_inference(skipping, kept)
    assert "P003_S1" not in set(out["scan_predictions"]["scan_id"])
    assert len(out["scan_predictions"]) == len({name.rsplit("_", 1)[0] for name in images}) - 1
    listed = out["inference_problems"].set_index("scan_id").loc["P003_S1"]
    assert "missing sequence(s) ['t2']" in listed["problem"]
    assert "inference.missing_sequences: skip" in listed["problem"]


def test_single_files_for_a_multi_sequence_model_are_listed_with_the_files_expected(trained):
    bundle, images, _ = trained
    singles = {
        name.replace("_t1.nii.gz", ".nii.gz"): image
        for name, image in images.items()
        if name.endswith("_t1.nii.gz")
    }
    scans = pd.DataFrame({"scan_id": ["P001_S1"]})
    out = run_inference(bundle, singles, scans)
    assert out["scan_predictions"].empty and out["scan_embeddings"].empty
    assert out["query_results"].empty and out["evidence_maps"] == {}
    problems = out["inference_problems"].set_index("item")
    assert set(singles) <= set(problems.index)
    expected = ", ".join(f"P002_S1_{name}.nii.gz" for name in SEQUENCES)
    assert expected in problems.loc["P002_S1.nii.gz", "problem"]
    ghost = problems.loc["scans.csv scan_id 'P001_S1'", "fix"]
    assert ghost.startswith("add " + ", ".join(f"images/P001_S1_{n}.nii.gz" for n in SEQUENCES))


def test_bundles_whose_sequences_do_not_fit_their_encoder_are_refused(trained):
    bundle, _, _ = trained
    older = copy.deepcopy(bundle)  # saved before bundles recorded the sequences
    del older["inference"]["sequences"], older["inference"]["missing_sequences"]
    with pytest.raises(IncompatibleBundleError, match="takes 4 image channels.*does not record"):
        inference_spec(older)
    ruleless = copy.deepcopy(bundle)
    del ruleless["inference"]["missing_sequences"]
    with pytest.raises(IncompatibleBundleError, match="not the missing-sequence rule"):
        inference_spec(ruleless)
    fewer = copy.deepcopy(bundle)
    fewer["inference"]["sequences"] = ["t1", "t2"]
    with pytest.raises(IncompatibleBundleError, match=r"\['t1', 't2'\].*takes 4 image"):
        inference_spec(fewer)
    unknown_rule = copy.deepcopy(bundle)
    unknown_rule["inference"]["missing_sequences"] = "drop"
    with pytest.raises(IncompatibleBundleError, match="missing_sequences must be one of"):
        inference_spec(unknown_rule)
