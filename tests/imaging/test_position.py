"""Grid-coordinate channels: values against an independent formula, and every crop site
(training cubes, lesion cubes, whole volumes, scoring patches, pretraining crops) giving the
coordinates of the voxels it cut."""

import warnings

import numpy as np
import pandas as pd
import pytest
import torch

from mriclip.evaluation.embedding import embed_patches
from mriclip.imaging.position import grid_coordinates, with_position
from mriclip.models.encoders import build_image_encoder
from mriclip.models.factory import create_clip_model
from mriclip.text.templates import SentenceTemplates
from mriclip.training.pretraining import PretrainingSamples
from mriclip.training.samples import AlignmentSamples, LesionPatches

SHAPE = (24, 20, 28)


def expected_coordinate(index, side):
    """Voxel ``index``'s centre on an axis of ``side`` voxels, mapped linearly onto [-1, 1]."""
    return -1 + 2 * (index + 0.5) / side


def test_grid_coordinates_are_voxel_centres_scaled_to_minus_one_one():
    coordinates = grid_coordinates((3, -2, 20), (4, 4, 4), SHAPE)
    assert coordinates.shape == (3, 4, 4, 4) and coordinates.dtype == np.float32
    for axis, (begin, side) in enumerate(zip((3, -2, 20), SHAPE, strict=True)):
        for offset in range(4):
            index = [slice(None)] * 3
            index[axis] = offset
            channel = coordinates[axis][tuple(index)]
            np.testing.assert_allclose(channel, expected_coordinate(begin + offset, side), 1e-6)
    # The whole grid spans the axis symmetrically; a crop leaving it goes beyond [-1, 1].
    whole = grid_coordinates((0, 0, 0), SHAPE, SHAPE)
    np.testing.assert_allclose(whole.reshape(3, -1).mean(1), 0, atol=1e-6)
    assert coordinates[1].min() < -1 < coordinates[0].min()


def test_grid_coordinates_reject_non_3d_input():
    with pytest.raises(ValueError, match="3D start, size and grid"):
        grid_coordinates((0, 0), (4, 4), (8, 8))


def test_with_position_appends_three_channels_after_the_image():
    image = torch.randn(1, 4, 4, 4)
    out = with_position(image, (5, 6, 7), SHAPE)
    assert out.shape == (4, 4, 4, 4)
    assert torch.equal(out[:1], image)
    np.testing.assert_array_equal(out[1:].numpy(), grid_coordinates((5, 6, 7), (4,) * 3, SHAPE))


def encoder(**extra):
    return build_image_encoder("resnet", filters=4, levels=3, subunits=1, **extra)


def test_encoder_with_position_channels_takes_four_channels_and_says_so():
    positioned = encoder(position_channels=True)
    assert positioned.in_channels == 1 and positioned.input_channels == 4
    assert positioned(torch.randn(2, 4, 16, 16, 16)).shape == (2, positioned.feature_dim)
    with pytest.raises(ValueError, match=r"\(B, 4, D, H, W\) \(image \+ 3 position channels\)"):
        positioned(torch.randn(2, 1, 16, 16, 16))
    assert encoder().input_channels == 1
    assert positioned.build_config["position_channels"] is True  # saved with the weights


@pytest.fixture
def cohort():
    rng = np.random.default_rng(0)
    volumes = {"S0": rng.normal(size=SHAPE).astype(np.float32) + 5}
    labels = {"S0": np.zeros(SHAPE, np.int16)}
    labels["S0"][10:13, 10:13, 10:13] = 1
    lesions = pd.DataFrame(
        [{"scan_id": "S0", "lesion_id": 1, "region": "frontal", "center_x": 11,
          "center_y": 11, "center_z": 11, "n_voxels": 27}]
    )  # fmt: skip
    scans = pd.DataFrame({"scan_id": ["S0"], "regions": ["frontal"], "n_lesions": [1]})
    return scans, volumes, labels, lesions


def locate(image, volume):
    """Where the image channel was cut from, found by matching voxels (independent of the
    coordinate channels)."""
    size = image.shape[1]
    for start in np.ndindex(*(n - size + 1 for n in volume.shape)):
        if np.array_equal(volume[tuple(slice(s, s + size) for s in start)], image[0]):
            return start
    raise AssertionError("crop not found in the volume")


def test_training_and_lesion_cubes_carry_the_coordinates_of_their_voxels(cohort):
    scans, volumes, labels, lesions = cohort
    templates = SentenceTemplates()
    samples = AlignmentSamples(
        scans, volumes, lesions, templates, patch_size=8, labels=labels, jitter=0.2,
        position_channels=True, seed=3,
    )  # fmt: skip
    starts = set()
    for epoch in range(6):
        image = samples[(epoch, 0)]["image"].numpy()
        assert image.shape == (4, 8, 8, 8)
        start = locate(image, volumes["S0"])
        starts.add(start)
        np.testing.assert_allclose(image[1:], grid_coordinates(start, (8,) * 3, SHAPE), 1e-6)
    assert len(starts) > 1
    cubes = LesionPatches(lesions, scans, volumes, templates, 8, position_channels=True)
    image = cubes[0]["image"].numpy()
    np.testing.assert_allclose(image[1:], grid_coordinates((7, 7, 7), (8,) * 3, SHAPE), 1e-6)
    whole = AlignmentSamples(
        scans, volumes, lesions, templates, mode="volume", position_channels=True
    )[0]["image"]
    assert whole.shape == (4, *SHAPE)
    np.testing.assert_array_equal(whole[1:].numpy(), grid_coordinates((0, 0, 0), SHAPE, SHAPE))


def test_pretraining_crops_carry_coordinates_and_targets_do_not(cohort):
    volumes = cohort[1]
    item = PretrainingSamples(volumes, ["S0"], 8, seed=0, position_channels=True)[0]
    assert item["image"].shape == (4, 8, 8, 8) and item["target"].shape == (1, 8, 8, 8)
    start = locate(item["target"].numpy(), volumes["S0"])
    np.testing.assert_allclose(item["image"][1:], grid_coordinates(start, (8,) * 3, SHAPE), 1e-6)


def test_scoring_patches_embed_with_their_coordinates(cohort):
    volume = cohort[1]["S0"]
    torch.manual_seed(0)
    model = create_clip_model(encoder(position_channels=True), {}, {"embed_dim": 8})
    starts = np.array([[0, 0, 0], [8, 4, 12], [16, 12, 20]])
    got = embed_patches(model, volume, starts, 8, batch_size=2)
    cubes = torch.stack(
        [with_position(torch.from_numpy(volume[a : a + 8, b : b + 8, c : c + 8])[None],
                       (a, b, c), SHAPE) for a, b, c in starts]
    )  # fmt: skip
    with torch.no_grad():
        expected = model.eval().encode_image(cubes).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    # The same cube at another place embeds differently: position reaches the embedding.
    moved = embed_patches(model, np.roll(volume, (8, 8, 8), (0, 1, 2)), starts[:1] + 8, 8, 1)
    assert not np.allclose(moved, got[:1], atol=1e-4)


@pytest.mark.parametrize("native", [True, False])
def test_scoring_patches_in_bf16_stays_close_to_float32(cohort, monkeypatch, native):
    from mriclip.training import runtime

    if native and not runtime.cpu_has_native_bf16():
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    volume = cohort[1]["S0"]
    torch.manual_seed(0)
    model = create_clip_model(encoder(position_channels=True), {}, {"embed_dim": 8})
    starts = np.array([[0, 0, 0], [8, 4, 12], [16, 12, 20]])
    full = embed_patches(model, volume, starts, 8, 2)
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("default")  # as a run shows them: once per place
        scans = [
            embed_patches(model, volume, starts, 8, 2, mixed_precision_cpu=True) for _ in "abc"
        ]
    if native:  # bf16 keeps 8 bits of mantissa: unit embeddings agree to about 1e-2
        assert not np.array_equal(scans[0], full) and not warned
        np.testing.assert_allclose(scans[0], full, atol=3e-2)
    else:  # a CPU without it stays in float32, saying so once for all the scans it scores
        assert [str(w.message) for w in warned] == [
            "mixed_precision_cpu: this CPU has no native bf16 (AVX512-BF16 or AMX), so the "
            "run stays in float32"
        ]
        np.testing.assert_array_equal(scans[0], full)
