import numpy as np
import pytest
from scipy import ndimage

from mriclip.imaging.ablation import inpaint_lesions, lesion_mask


def textured_head(seed=0):
    """A RAS+ 'head': left/right symmetric tissue with noise, and a bright lesion on the
    right with a dark oedema halo around it; also the same head without them."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(48)] * 3, indexing="ij"), axis=-1)
    head = (((grid - 23.5) / 20) ** 2).sum(-1) <= 1
    volume = np.where(head, 1.0 + 0.3 * np.sin(grid[..., 1] / 3.0), 0.0)
    volume = (volume + head * rng.normal(0, 0.1, head.shape)).astype(np.float32)
    healthy = volume.copy()
    label = np.zeros(volume.shape, np.int16)
    distance = np.linalg.norm(grid - np.array([34, 24, 24]), axis=-1)
    oedema = (distance <= 6) & (distance > 3)
    volume[oedema] *= 0.6
    label[distance <= 3] = 1
    volume[distance <= 3] = 3.0
    return volume, label, head, healthy


def test_ablation_fills_the_lesion_with_tissue_like_its_surroundings():
    volume, label, head, healthy = textured_head()
    ablated = inpaint_lesions(volume, label, dilation_factor=1.5, dilation_voxels=2)
    mask = lesion_mask(label, 1.5, 2)
    assert mask[label > 0].all() and mask.sum() > (label > 0).sum()  # dilated
    assert (volume != healthy).sum() == (mask & (volume != healthy)).sum()  # all of it masked
    # Inside the mask: the statistics of the healthy tissue that was there.
    assert abs(ablated[mask].mean() - healthy[mask].mean()) < 0.05
    assert ablated[mask].std() == pytest.approx(healthy[mask].std(), rel=0.3)
    oedema = (volume < healthy) & (label == 0)
    assert healthy[oedema].mean() - volume[oedema].mean() > 0.3  # the halo was dark
    assert abs(ablated[oedema].mean() - healthy[oedema].mean()) < 0.05  # and is gone
    assert ablated[label > 0].max() < 2.0  # the bright lesion is gone
    far = ~ndimage.binary_dilation(mask, iterations=1)
    np.testing.assert_array_equal(ablated[far], volume[far])  # nothing else changes
    np.testing.assert_array_equal(volume, textured_head()[0])  # the input is not modified


def test_mirror_fill_copies_the_contralateral_tissue():
    volume, label, _, _ = textured_head()
    ablated = inpaint_lesions(volume, label, dilation_factor=0.0, dilation_voxels=0)
    inside = np.argwhere(label > 0)
    mirrored = inside.copy()
    mirrored[:, 0] = 47 - inside[:, 0]  # the head spans 0..47 along x: centre 23.5
    np.testing.assert_array_equal(ablated[tuple(inside.T)], volume[tuple(mirrored.T)])


def test_ablation_without_lesions_changes_nothing_and_checks_grids():
    volume = textured_head()[0]
    empty = np.zeros(volume.shape, np.int16)
    np.testing.assert_array_equal(inpaint_lesions(volume, empty), volume)
    with pytest.raises(ValueError, match="shape"):
        inpaint_lesions(volume, empty[:-1])
    with pytest.raises(ValueError, match="dilation"):
        lesion_mask(empty, dilation_factor=-1)
