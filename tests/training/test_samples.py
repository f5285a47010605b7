import numpy as np
import pandas as pd
import pytest

from mriclip.text.templates import SentenceTemplates
from mriclip.training.samples import AlignmentSamples, crop_with_padding


def test_crop_with_padding_matches_numpy_pad():
    volume = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    padded = np.pad(volume, 5)
    for start in [(0, 0, 0), (-3, 2, 4), (4, 5, 6), (-5, -5, -5)]:
        expected = padded[tuple(slice(s + 5, s + 5 + 4) for s in start)]
        np.testing.assert_array_equal(crop_with_padding(volume, start, 4), expected)


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    volumes = {f"S{i}": rng.normal(size=(40, 40, 40)).astype(np.float32) for i in range(3)}
    labels = {sid: np.zeros((40, 40, 40), np.int16) for sid in volumes}
    lesions = pd.DataFrame(
        [
            {
                "scan_id": "S0",
                "lesion_id": 1,
                "region": "frontal",
                "center_x": 8,
                "center_y": 8,
                "center_z": 8,
                "n_voxels": 30,
            },
            {
                "scan_id": "S0",
                "lesion_id": 2,
                "region": "cerebellar",
                "center_x": 32,
                "center_y": 32,
                "center_z": 32,
                "n_voxels": 10,
            },
            {
                "scan_id": "S1",
                "lesion_id": 1,
                "region": "temporal",
                "center_x": 20,
                "center_y": 20,
                "center_z": 20,
                "n_voxels": 5,
            },
        ]
    )
    scans = pd.DataFrame(
        {
            "scan_id": ["S0", "S1"],
            "age": [50, 60],
            "sex": ["male", "female"],
            "regions": ["frontal;cerebellar", "temporal"],
        }
    )
    return scans, volumes, labels, lesions


def test_patch_sentences_describe_only_lesions_inside(cohort):
    scans, volumes, labels, lesions = cohort
    samples = AlignmentSamples(
        scans,
        volumes,
        lesions,
        SentenceTemplates(),
        mode="patch",
        patch_size=16,
        jitter=0.0,
        paraphrase=False,
    )
    seen = {}
    for _ in range(60):
        item = samples[0]
        seen[item["key"]] = item
        assert item["image"].shape == (1, 16, 16, 16)
    # lesions 24 voxels apart never share a 16-voxel cube; both are drawn
    assert set(seen) == {"frontal", "cerebellar"}
    frontal = seen["frontal"]
    assert "frontal" in frontal["sentence"] and "cerebellar" not in frontal["sentence"]
    np.testing.assert_array_equal(frontal["image"][0].numpy(), volumes["S0"][0:16, 0:16, 0:16])


def test_patches_follow_lesion_volume(cohort):
    scans, volumes, labels, lesions = cohort
    samples = AlignmentSamples(
        scans,
        volumes,
        lesions,
        SentenceTemplates(),
        patch_size=16,
        jitter=0.0,
        seed=3,
    )
    keys = [samples[0]["key"] for _ in range(400)]
    assert keys.count("frontal") / len(keys) == pytest.approx(30 / 40, abs=0.06)


def test_volume_mode_uses_scan_regions(cohort):
    scans, volumes, _, lesions = cohort
    samples = AlignmentSamples(
        scans, volumes, lesions, SentenceTemplates(), mode="volume", paraphrase=False
    )
    item = samples[0]
    assert item["image"].shape == (1, 40, 40, 40)
    assert item["key"] == "cerebellar;frontal"
    assert item["sentence"].startswith("The age of the subject is 50.")


def test_bad_inputs_are_named(cohort):
    scans, volumes, labels, lesions = cohort
    with pytest.raises(ValueError, match="mode must be one of"):
        AlignmentSamples(scans, volumes, lesions, SentenceTemplates(), mode="slices")
    with pytest.raises(ValueError, match=r"no preprocessed volume for scan\(s\) \['S9'\]"):
        AlignmentSamples(
            pd.DataFrame({"scan_id": ["S9"], "regions": [""]}),
            volumes,
            lesions,
            SentenceTemplates(),
            mode="volume",
        )
    with pytest.raises(ValueError, match=r"scan\(s\) \['S2'\] have no lesion"):
        AlignmentSamples(
            pd.DataFrame({"scan_id": ["S2"], "regions": [""]}),
            volumes,
            lesions,
            SentenceTemplates(),
        )
