"""Evidence panels: the slice through the largest lesion, the scan's and its twin's evidence."""

import numpy as np
import pandas as pd

from mriclip.evaluation.evidence_panels import axial, evidence_panels, lesion_depth
from mriclip.evaluation.scan_scoring import evidence_map


def test_lesion_depth_is_the_slice_with_most_lesion_voxels_else_the_middle():
    label = np.zeros((4, 4, 9), dtype=int)
    assert lesion_depth(label, 9) == 4
    label[0, 0, 2] = 1
    label[:2, :2, 6] = 3
    assert lesion_depth(label, 9) == 6


def test_panels_show_both_variants_on_the_slice_of_the_lesion():
    shape = (8, 8, 8)
    volume = np.zeros(shape, dtype=np.float32)
    volume[1:7, 1:7, 1:7] = 1.0
    ablated = volume * 0.5
    label = np.zeros(shape, dtype=int)
    label[2:4, 2:4, 5] = 1
    starts = np.array([[0, 0, 0], [4, 4, 4], [0, 4, 0]])
    rows = [
        {"scan_id": "s", "variant": variant, "x": x, "y": y, "z": z, "patch_size": 4,
         "lesion_evidence": value}
        for variant, values in (("original", [0.9, 0.1, 0.4]), ("lesion_ablated", [0.2] * 3))
        for (x, y, z), value in zip(starts, values, strict=True)
    ]  # fmt: skip
    panels = evidence_panels(
        pd.DataFrame(rows), {"s": volume, "t": volume}, {"s": ablated}, {"s": label}, ["s", "t"]
    )
    panel = panels[0]
    np.testing.assert_array_equal(panel["image"], axial(volume, 5))
    np.testing.assert_array_equal(panel["label"], axial(label, 5))
    np.testing.assert_array_equal(panel["ablated_image"], axial(ablated, 5))
    expected = evidence_map(shape, starts, 4, np.array([0.9, 0.1, 0.4]), volume != 0)
    np.testing.assert_allclose(panel["evidence"], axial(expected, 5))
    assert panel["ablated_evidence"].shape == (8, 8)
    # a scan without labels or patches: its middle slice, no evidence
    assert panels[1].keys() == {"scan_id", "image", "label"}
    np.testing.assert_array_equal(panels[1]["image"], axial(volume, 4))
