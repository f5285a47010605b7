"""A scan's lesion-ablated twin reuses the registration transform its preprocessing kept, and
an unchanged twin is read back from the cache instead of being made again."""

from types import SimpleNamespace

import nibabel as nib
import numpy as np
import pytest

from mriclip.datasets import ScanStore
from mriclip.imaging import registration, twins
from mriclip.imaging.preprocessing import preprocess_scan, preprocess_twin, registration_transform
from tests.conftest import preprocessing_config
from tests.imaging.test_registration import posed_scan

CONFIG = preprocessing_config(target_shape=[32, 32, 32], target_spacing=[4.0, 4.0, 4.0])


@pytest.fixture(scope="module")
def scan():
    image, label, _, _ = posed_scan([5.0, -4.0, 3.0], [4.0, -3.0, 2.0])
    data = np.asarray(image.dataobj)
    twin = np.where(label > 0, np.median(data[data > 0]), data).astype(np.float32)
    return image, data, twin


def test_the_twin_reuses_the_kept_transform_and_equals_a_fresh_estimate(scan, monkeypatch):
    image, data, twin = scan
    _, _, report = preprocess_scan(image, data, None, CONFIG)
    transform = registration_transform(report)
    assert transform.shape == (4, 4)
    fresh = preprocess_twin(image, data, twin, CONFIG)  # estimates the transform again

    def no_estimate(*args, **kwargs):
        raise AssertionError("the twin estimated the registration again")

    monkeypatch.setattr(registration, "estimate_transform", no_estimate)
    reused = preprocess_twin(image, data, twin, CONFIG, transform)
    np.testing.assert_array_equal(reused, fresh)  # registration is deterministic
    assert registration_transform({"registration_transform": float("nan")}) is None  # CSV's


class Counting:
    """``twins.make_twin`` counting its calls."""

    def __init__(self) -> None:
        self.made, self.original = [], twins.make_twin

    def __call__(self, scan, *args):
        self.made.append(scan.scan_id)
        return self.original(scan, *args)


def test_an_unchanged_twin_is_read_back_and_a_changed_one_made_again(scan, tmp_path, monkeypatch):
    image, data, twin = scan
    volume, label, report = preprocess_scan(image, data, (twin != data).astype(np.int16), CONFIG)
    raw_twin = nib.Nifti1Image(twin, image.affine)
    rows = [SimpleNamespace(scan_id=s, image_file=f"{s}.nii.gz", sequence_files=None) for s in "AB"]
    settings = {"dilation_factor": 1.5, "dilation_voxels": 1}

    def sources(twin_image, fingerprint="f0"):
        return twins.TwinSources(
            raw_images={"A.nii.gz": lambda: image, "B.nii.gz": lambda: image},
            raw_twins={"A.nii.gz": lambda: twin_image},  # B has none: inpainted
            volumes={"A": volume, "B": volume},
            labels={"A": label, "B": label},
            reports={"A": report, "B": report},
            fingerprints={"A": {"scan": fingerprint}, "B": {"scan": fingerprint}},
        )

    store = ScanStore(str(tmp_path / "twins"))
    counting = Counting()
    monkeypatch.setattr(twins, "make_twin", counting)
    first, report_rows = twins.ablated_twins(rows, sources(raw_twin), settings, CONFIG, store)
    assert counting.made == ["A", "B"]
    assert [r["method"] for r in report_rows] == ["counterfactual", "inpainted"]
    again, _ = twins.ablated_twins(rows, sources(raw_twin), settings, CONFIG, store)
    assert counting.made == ["A", "B"]  # nothing made
    for scan_id in "AB":
        np.testing.assert_array_equal(again[scan_id](), first[scan_id]())
    other = nib.Nifti1Image(twin * 1.01, image.affine)  # the raw twin file changed
    twins.ablated_twins(rows, sources(other), settings, CONFIG, store)
    assert counting.made == ["A", "B", "A"]
    twins.ablated_twins(rows, sources(other, "f1"), settings, CONFIG, store)  # scans changed
    assert counting.made == ["A", "B", "A", "A", "B"]
    changed = {**settings, "dilation_voxels": 2}
    twins.ablated_twins(rows, sources(other, "f1"), changed, CONFIG, store)
    assert counting.made == ["A", "B", "A", "A", "B", "B"]  # only the inpainted twin
