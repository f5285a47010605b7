import gzip
import pickle

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import torch
from kedro.io.core import DatasetError, Version

from mriclip.datasets import (
    MemmapArrayDataset,
    NiftiDataset,
    OptionalCSVDataset,
    TorchCheckpointDataset,
)


@pytest.fixture
def image():
    rng = np.random.default_rng(0)
    affine = np.array([[-1.5, 0, 0, 90], [0, 2.0, 0, -120], [0, 0, 2.5, -70], [0, 0, 0, 1]])
    return nib.Nifti1Image(rng.normal(size=(7, 8, 9)).astype(np.float32), affine)


@pytest.mark.parametrize("suffix", [".nii", ".nii.gz"])
def test_nifti_round_trip_keeps_voxels_and_affine(tmp_path, image, suffix):
    path = tmp_path / f"scan{suffix}"
    dataset = NiftiDataset(filepath=str(path))
    dataset.save(image)
    loaded = dataset.load()
    np.testing.assert_array_equal(loaded.get_fdata(), image.get_fdata())
    np.testing.assert_allclose(loaded.affine, image.affine)
    assert dataset.exists()
    # the file on disk is really what the suffix says, and nibabel reads it independently
    assert (path.read_bytes()[:2] == b"\x1f\x8b") == (suffix == ".nii.gz")
    np.testing.assert_array_equal(nib.load(path).get_fdata(), image.get_fdata())


def test_nifti_versioned_save_and_load(tmp_path, image):
    dataset = NiftiDataset(filepath=str(tmp_path / "scan.nii.gz"), version=Version(None, None))
    dataset.save(image)
    assert len(list((tmp_path / "scan.nii.gz").iterdir())) == 1
    np.testing.assert_allclose(dataset.load().affine, image.affine)


def test_nifti_dataset_is_picklable_and_previews(tmp_path, image):
    dataset = NiftiDataset(filepath=str(tmp_path / "scan.nii.gz"))
    dataset.save(image)
    clone = pickle.loads(pickle.dumps(dataset))
    np.testing.assert_array_equal(clone.load().get_fdata(), image.get_fdata())
    import base64

    assert base64.b64decode(dataset.preview())[:8] == b"\x89PNG\r\n\x1a\n"


def test_truncated_nifti_names_the_file(tmp_path, image):
    path = tmp_path / "broken.nii.gz"
    NiftiDataset(filepath=str(path)).save(image)
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DatasetError, match="broken.nii.gz"):
        NiftiDataset(filepath=str(path)).load()


def test_not_nifti_names_the_file(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(gzip.compress(b"this is not an image" * 30))
    with pytest.raises(DatasetError, match="notes.nii.gz.*corrupt"):
        NiftiDataset(filepath=str(path)).load()


def test_memmap_dataset_loads_memory_mapped(tmp_path):
    array = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    dataset = MemmapArrayDataset(filepath=str(tmp_path / "v.npy"))
    dataset.save(array)
    loaded = dataset.load()
    assert isinstance(loaded, np.memmap) or isinstance(loaded.base, np.memmap)
    np.testing.assert_array_equal(loaded, array)
    assert not loaded.flags.writeable


def test_checkpoint_round_trip_and_refuses_modules(tmp_path):
    dataset = TorchCheckpointDataset(filepath=str(tmp_path / "model.pt"))
    bundle = {"config": {"name": "resnet", "depth": 2}, "state_dict": {"w": torch.arange(4.0)}}
    dataset.save(bundle)
    loaded = dataset.load()
    assert loaded["config"] == bundle["config"]
    torch.testing.assert_close(loaded["state_dict"]["w"], bundle["state_dict"]["w"])
    with pytest.raises(DatasetError, match="stores dicts"):
        dataset.save(torch.nn.Linear(2, 2))


def test_checkpoint_with_arbitrary_pickle_is_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"payload": pd.DataFrame({"a": [1]})}, path)  # not loadable with weights_only
    with pytest.raises(DatasetError, match="weights_only"):
        TorchCheckpointDataset(filepath=str(path)).load()


def test_optional_csv_is_empty_when_absent(tmp_path):
    dataset = OptionalCSVDataset(filepath=str(tmp_path / "lesions.csv"))
    assert dataset.load().empty
    dataset.save(pd.DataFrame({"scan_id": ["a"], "lesion_id": [1]}))
    assert dataset.load()["lesion_id"].tolist() == [1]


def test_figure_dataset_saves_png_and_loads_bytes(tmp_path):
    from matplotlib.figure import Figure

    from mriclip.datasets import FigurePNGDataset

    figure = Figure()
    figure.subplots().plot([0, 1], [1, 0])
    dataset = FigurePNGDataset(filepath=str(tmp_path / "f.png"), version=Version(None, None))
    dataset.save(figure)
    assert dataset.load()[:8] == b"\x89PNG\r\n\x1a\n"


def test_optional_datasets_load_none_until_saved(tmp_path):

    from mriclip.datasets import FigurePNGDataset, OptionalJSONDataset

    summary = OptionalJSONDataset(filepath=str(tmp_path / "s.json"), version=Version(None, None))
    assert summary.load() is None
    summary.save({"loss": 0.5})
    assert summary.load() == {"loss": 0.5}
    figure = FigurePNGDataset(
        filepath=str(tmp_path / "f.png"), version=Version(None, None), optional=True
    )
    assert figure.load() is None
    required = FigurePNGDataset(filepath=str(tmp_path / "g.png"), version=Version(None, None))
    with pytest.raises(DatasetError):
        required.load()
