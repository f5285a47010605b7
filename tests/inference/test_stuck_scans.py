"""No new scan can stall inference: a scan whose preprocessing outlasts
inference.scan_timeout_s is ended and listed with the time it ran, a scan with extreme values
is listed before any preprocessing, and every other scan's predictions are unchanged, serially
and with workers."""

import time

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from mriclip import inference
from mriclip.pipelines.inference import create_pipeline
from tests.inference.test_inference import bundle, new_scans  # noqa: F401 - fixtures
from tests.pipelines.helpers import load_parameters, run_in_memory

STUCK = b"stuck"


def hangs_on_stuck_scans(original):
    """``preprocess_scan`` that never returns (sleeps) for an image described as stuck."""

    def preprocess_scan(image, *args, **kwargs):
        if image.header["descrip"].item() == STUCK:
            time.sleep(120)
        return original(image, *args, **kwargs)

    return preprocess_scan


def predict(bundle, images, timeout_s, workers):  # noqa: F811 - the fixture's value
    parameters = load_parameters()
    settings = {**parameters["inference"], "scan_timeout_s": timeout_s, "workers": workers}
    return run_in_memory(
        create_pipeline(),
        {"clip_model": bundle, "inference_images": images, "inference_scans": pd.DataFrame()},
        overrides={"inference": settings},
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_stuck_and_a_corrupted_scan_are_listed_and_the_others_unchanged(
    bundle,  # noqa: F811
    new_scans,  # noqa: F811
    monkeypatch,
    workers,
):
    # the preprocessing processes are forked: they run the patched function
    monkeypatch.setattr(
        inference, "preprocess_scan", hangs_on_stuck_scans(inference.preprocess_scan)
    )
    cohort, images = new_scans
    good = {name: images[name] for name in cohort.images}
    clean = predict(bundle, good, timeout_s=None, workers=1)  # serially, in this process
    first = next(iter(cohort.images.values()))
    corrupted = np.asarray(first.dataobj).astype(np.float32)
    corrupted[5:7, 5:7, 5:7] = -2.0e32
    stuck = nib.Nifti1Image(np.asarray(first.dataobj), first.affine)
    stuck.header["descrip"] = STUCK
    bad = {
        **good,
        "stuck.nii.gz": lambda: stuck,
        "corrupted.nii.gz": lambda: nib.Nifti1Image(corrupted, first.affine),
    }
    tick = time.monotonic()
    out = predict(bundle, bad, timeout_s=3, workers=workers)
    assert time.monotonic() - tick < 60
    problems = out["inference_problems"].set_index("item")
    assert problems.loc["stuck.nii.gz", "problem"].startswith(
        "preprocessing took too long: ended after 3."
    )
    assert "inference.scan_timeout_s" in problems.loc["stuck.nii.gz", "fix"]
    assert "8 voxel(s) beyond +-1e+06" in problems.loc["corrupted.nii.gz", "problem"]
    pd.testing.assert_frame_equal(out["scan_predictions"], clean["scan_predictions"])
    pd.testing.assert_frame_equal(out["scan_embeddings"], clean["scan_embeddings"])
    assert out["evidence_maps"].keys() == clean["evidence_maps"].keys()
    for name, evidence in out["evidence_maps"].items():
        expected = clean["evidence_maps"][name]().get_fdata()
        np.testing.assert_array_equal(evidence().get_fdata(), expected)
