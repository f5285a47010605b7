import nibabel as nib
import numpy as np
import pytest

from mriclip.imaging.preprocessing import lesion_geometry, preprocess_scan
from tests.conftest import make_head, preprocessing_config

# Resampling and intensity steps are compared voxel for voxel: no registration to a template.
CONFIG = preprocessing_config(
    target_spacing=(3, 3, 3), target_shape=(32, 32, 32), registration="none"
)


@pytest.fixture
def scan():
    volume, label = make_head(shape=(40, 48, 36), lesions=((28, 30, 18, 4), (10, 12, 20, 3)))
    return nib.Nifti1Image(volume, np.diag([2.0, 2.0, 2.5, 1.0])), volume, label


def test_output_grid_and_normalisation(scan):
    image, volume, label = scan
    out, out_label, meta = preprocess_scan(image, volume, label, CONFIG)
    assert out.shape == out_label.shape == (32, 32, 32)
    assert out.dtype == np.float32 and out_label.dtype == np.int16
    foreground = out != 0
    assert out[foreground].mean() == pytest.approx(0.0, abs=1e-4)
    assert out[foreground].std() == pytest.approx(1.0, abs=1e-3)
    assert meta["original_orientation"] == "RAS" and meta["output_shape"] == "32x32x32"


def test_labels_stay_integer_ids(scan):
    image, volume, label = scan
    _, out_label, _ = preprocess_scan(image, volume, label, CONFIG)
    assert set(np.unique(out_label)) == {0, 1, 2}
    geometry = lesion_geometry(out_label)
    # lesion 1 is the bigger ball: it stays bigger on the new grid
    assert geometry[1][1] > geometry[2][1] > 0


def test_reorientation_makes_orientation_irrelevant(scan):
    """The same anatomy stored flipped and axis-permuted (LPS-like) preprocesses identically."""
    image, volume, label = scan
    flipped = np.flip(volume, axis=(0, 1)).transpose(1, 0, 2)
    flipped_label = np.flip(label, axis=(0, 1)).transpose(1, 0, 2)
    ras_to_stored = image.affine @ np.array(
        [
            [0, -1, 0, volume.shape[0] - 1],
            [-1, 0, 0, volume.shape[1] - 1],
            [0, 0, 1, 0],
            [0, 0, 0, 1],
        ],
        dtype=float,
    )
    stored = nib.Nifti1Image(flipped.copy(), ras_to_stored)
    assert "".join(nib.aff2axcodes(stored.affine)) == "PLS"
    expected, expected_label, _ = preprocess_scan(image, volume, label, CONFIG)
    out, out_label, meta = preprocess_scan(stored, flipped.copy(), flipped_label.copy(), CONFIG)
    assert meta["original_orientation"] == "PLS"
    np.testing.assert_allclose(out, expected, atol=1e-4)
    np.testing.assert_array_equal(out_label, expected_label)


def test_n4_reduces_a_bias_field(scan):
    image, volume, _ = scan
    x = np.linspace(0.6, 1.4, volume.shape[0])[:, None, None]
    biased = (volume * x).astype(np.float32)
    plain, _, _ = preprocess_scan(image, biased, None, CONFIG)
    corrected, _, meta = preprocess_scan(
        image,
        biased,
        None,
        preprocessing_config(
            target_shape=(32, 32, 32),
            n4_bias_correction=True,
            n4_iterations=(20, 20),
            registration="none",
        ),
    )
    assert meta["n4_bias_correction"] is True

    def left_right_gap(out):
        head = out != 0
        half = out.shape[0] // 2
        return abs(out[:half][head[:half]].mean() - out[half:][head[half:]].mean())

    assert left_right_gap(corrected) < 0.5 * left_right_gap(plain)


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("fit", "stretch", "fit must be"),
        ("target_shape", (32, 32), "target_shape must be 3 sizes"),
        ("target_spacing", (1, 0, 1), "target_spacing must be 3 positive"),
        ("clip_percentile", 20, "clip_percentile"),
    ],
)
def test_bad_parameters_are_rejected(field, value, message):
    with pytest.raises(ValueError, match=message):
        preprocessing_config(**{field: value})


def test_empty_volume_is_a_clear_error():
    image = nib.Nifti1Image(np.zeros((20, 20, 20), np.float32), np.eye(4))
    with pytest.raises(ValueError, match="no positive voxels|empty"):
        preprocess_scan(image, np.zeros((20, 20, 20), np.float32), None, CONFIG)


def test_head_mask_drops_isolated_noise_voxels():
    from mriclip.imaging.preprocessing import head_mask

    volume, _ = make_head(shape=(40, 48, 36), lesions=())
    rng = np.random.default_rng(1)
    speckles = [
        (0, int(y), int(z))
        for y, z in zip(rng.integers(0, 48, 30), rng.integers(0, 36, 30), strict=True)
    ]
    for voxel in speckles:
        volume[voxel] = 150.0
    mask = head_mask(volume, 0.05)
    assert not any(mask[voxel] for voxel in speckles)
    head = volume > 50
    head[0] = False
    assert (mask == head).mean() > 0.99


def test_warm_up_loads_the_template_once_for_the_processes_forked_per_scan():
    from mriclip.imaging import registration
    from mriclip.imaging.preprocessing import warm_up

    registration._template.cache_clear()
    warm_up(preprocessing_config())  # affine registration: the template at 4 mm and 3 mm
    assert registration._template.cache_info().currsize == 2
    registration._template.cache_clear()
    warm_up(preprocessing_config(registration="none"))
    assert registration._template.cache_info().currsize == 0
