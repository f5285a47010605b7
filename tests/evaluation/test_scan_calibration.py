"""Scan-level calibration fitted on held-out scans, checked against the calibration module's
own functions applied by hand to the same scores, and the evaluation's prompt scoring."""

import numpy as np
import pandas as pd
import pytest
import torch

from mriclip.evaluation.calibration import calibrated, expected_calibration_error
from mriclip.evaluation.scan_calibration import (
    fit_scan_calibration,
    scan_scores,
    target_labels,
)
from mriclip.models.encoders import build_image_encoder
from mriclip.models.factory import create_clip_model

REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]
SPEC = {
    "targets": {
        "regions": {
            "kind": "lesion",
            "classes": REGIONS,
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
EVALUATION = {
    "calibration": {"method": "platt", "n_bins": 10},
    "scan_scoring": {"stride": 8, "min_foreground_fraction": 0.25, "aggregation": "top_k_mean",
                     "top_k": 3, "target_aggregation": "mean", "threshold": 0.5,
                     "batch_size": 8, "mixed_precision_cpu": False},
    "prompts": {"ensemble": True, "negative": False},
}  # fmt: skip


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    encoder = build_image_encoder("resnet", filters=4, levels=4, subunits=1)
    model = create_clip_model(encoder, {"max_length": 32}, {"embed_dim": 32}).eval()
    rng = np.random.default_rng(0)
    grid = np.indices((32, 32, 32)) - 15.5
    head = (grid**2).sum(axis=0) < 14**2
    volumes = {
        f"S{i}": np.where(head, rng.normal(size=head.shape), 0).astype(np.float32) for i in range(8)
    }
    rows = pd.DataFrame(
        {
            "scan_id": list(volumes),
            "regions": ["frontal", "", "parietal;temporal", "occipital", "cerebellar",
                        "frontal;cerebellar", "", "temporal"],
            "diagnosis": ["atrophy", "none"] * 4,
        }
    )  # fmt: skip
    return model, volumes, rows


def test_target_labels_read_regions_and_columns(setting):
    _, _, rows = setting
    regions = target_labels(rows, ["S2", "S0"], SPEC, "regions")
    np.testing.assert_array_equal(regions, [[0, 1, 1, 0, 0], [1, 0, 0, 0, 0]])
    diagnosis = target_labels(rows, ["S1", "S0"], SPEC, "diagnosis")
    np.testing.assert_array_equal(diagnosis, [[0, 1], [1, 0]])


def test_calibration_is_fitted_on_the_held_out_scores_and_improves_their_ece(setting):
    model, volumes, rows = setting
    record = fit_scan_calibration(model, rows, volumes, SPEC, 16, EVALUATION)
    scores = scan_scores(
        model, list(rows["scan_id"]), volumes, SPEC, 16,
        EVALUATION["scan_scoring"], EVALUATION["prompts"],
    )  # fmt: skip
    assert record["n_held_out_scans"] == 8 and record["method"] == "platt"
    regions = record["targets"]["regions"]
    assert regions["columns"] == [f"prob_{region}" for region in REGIONS]
    raw = scores[regions["columns"]].to_numpy()
    truth = target_labels(rows, rows["scan_id"], SPEC, "regions")
    assert regions["held_out_ece_before"] == pytest.approx(expected_calibration_error(raw, truth))
    after = expected_calibration_error(calibrated(raw, regions), truth)
    assert regions["held_out_ece_after"] == pytest.approx(after)
    # Platt maximises the likelihood on these very scans, not the ECE: not much worse.
    assert after <= regions["held_out_ece_before"] + 0.05
    assert raw.min() >= 0.0 and raw.max() <= 1.0


def test_volumes_may_be_the_catalogs_loaders(setting):
    """Kedro's partitioned datasets give a loader per scan, not an array."""
    model, volumes, rows = setting
    loaders = {scan_id: (lambda volume=volume: volume) for scan_id, volume in volumes.items()}
    settings = (SPEC, 16, EVALUATION["scan_scoring"], EVALUATION["prompts"])
    pd.testing.assert_frame_equal(
        scan_scores(model, ["S0", "S3"], loaders, *settings),
        scan_scores(model, ["S0", "S3"], volumes, *settings),
    )


def test_calibration_can_be_switched_off_or_lack_held_out_scans(setting):
    model, volumes, rows = setting
    off = {**EVALUATION, "calibration": {"method": "none", "n_bins": 10}}
    assert fit_scan_calibration(model, rows, volumes, SPEC, 16, off) is None
    assert fit_scan_calibration(model, rows.iloc[:0], volumes, SPEC, 16, EVALUATION) is None
