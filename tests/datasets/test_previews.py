"""kedro-viz previews: each is a base64 PNG of what the dataset holds."""

import base64
import io

import nibabel as nib
import numpy as np
import pytest
from kedro.io.core import DatasetError
from matplotlib.figure import Figure
from matplotlib.image import imread

from mriclip.datasets import (
    FigurePNGDataset,
    MemmapArrayDataset,
    NiftiDataset,
    OptionalPartitionedDataset,
    PartitionedDataset,
)


def decoded(preview: str) -> np.ndarray:
    raw = base64.b64decode(preview)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(io.BytesIO(raw))


def three_panels(preview: str) -> np.ndarray:
    pixels = decoded(preview)
    height, width = pixels.shape[:2]
    assert 2.0 < width / height < 4.0  # three slices side by side
    return pixels


def save_scan(path, shape=(12, 14, 10), seed=0):
    volume = np.random.default_rng(seed).normal(size=shape).astype(np.float32)
    NiftiDataset(filepath=str(path)).save(nib.Nifti1Image(volume, np.eye(4)))


def test_four_dimensional_nifti_previews_its_first_volume(tmp_path):
    save_scan(tmp_path / "first.nii.gz", shape=(12, 14, 10))
    volume = nib.load(tmp_path / "first.nii.gz").get_fdata()
    stacked = np.stack([volume, np.zeros_like(volume)], axis=-1)
    nib.save(nib.Nifti1Image(stacked.astype(np.float32), np.eye(4)), tmp_path / "4d.nii.gz")
    first = three_panels(NiftiDataset(filepath=str(tmp_path / "first.nii.gz")).preview())
    np.testing.assert_array_equal(
        three_panels(NiftiDataset(filepath=str(tmp_path / "4d.nii.gz")).preview()), first
    )


def test_memmap_array_previews_its_slices(tmp_path):
    dataset = MemmapArrayDataset(filepath=str(tmp_path / "volume.npy"))
    dataset.save(np.random.default_rng(1).normal(size=(1, 16, 16, 16)).astype(np.float32))
    assert three_panels(dataset.preview()).std() > 0


def test_figure_previews_the_saved_png(tmp_path):
    dataset = FigurePNGDataset(filepath=str(tmp_path / "curve.png"))
    figure = Figure(figsize=(4, 2))
    figure.subplots().plot([0, 1], [1, 0])
    dataset.save(figure)
    assert base64.b64decode(dataset.preview()) == (tmp_path / "curve.png").read_bytes()


def test_folder_of_scans_previews_its_first_scan(tmp_path):
    save_scan(tmp_path / "images" / "b.nii.gz", seed=2)
    save_scan(tmp_path / "images" / "a.nii.gz", seed=3)
    folder = PartitionedDataset(path=str(tmp_path / "images"), dataset=NiftiDataset)
    first = NiftiDataset(filepath=str(tmp_path / "images" / "a.nii.gz")).preview()
    np.testing.assert_array_equal(three_panels(folder.preview()), decoded(first))


def test_empty_folder_has_no_preview(tmp_path):
    folder = OptionalPartitionedDataset(path=str(tmp_path / "none"), dataset=NiftiDataset)
    assert folder.load() == {}
    with pytest.raises(DatasetError, match="No partitions"):
        folder.preview()
