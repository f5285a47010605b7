"""A dataset's saved file as a local path, e.g. for logging it to MLflow."""

from pathlib import Path

import pytest
import torch
from kedro.io.core import Version

from mriclip.datasets import TorchCheckpointDataset


@pytest.mark.parametrize("root", ["local", "memory://saved"])
def test_saved_file_is_the_version_just_written(tmp_path, root):
    base = str(tmp_path) if root == "local" else root
    dataset = TorchCheckpointDataset(filepath=f"{base}/model.pt", version=Version(None, None))
    dataset.save({"state_dict": {"w": torch.ones(3)}})
    with dataset.saved_file() as path:
        loaded = torch.load(path, weights_only=True)
        assert Path(path).is_file() and Path(path).name == "model.pt"
    assert torch.equal(loaded["state_dict"]["w"], torch.ones(3))
    if root != "local":
        assert not Path(path).exists()  # the download was temporary
