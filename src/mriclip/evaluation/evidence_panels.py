"""The panels of the evidence figure: for each scan, the axial slice through its largest lesion
with its true label map, and the lesion evidence of the scan and of its lesion-ablated twin
mapped back onto the preprocessed grid."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mriclip.evaluation.embedding_tables import ABLATED, ORIGINAL
from mriclip.evaluation.scan_scoring import evidence_map
from mriclip.training.samples import is_foreground, reference_channel


def axial(volume: np.ndarray, depth: int) -> np.ndarray:
    """The axial slice at ``depth``, turned to be shown upright."""
    return np.rot90(volume[:, :, depth])


def lesion_depth(label: np.ndarray, depth: int) -> int:
    """The axial slice with the most lesion voxels, or the middle of ``depth`` slices when
    there are none."""
    lesion_voxels = (label > 0).sum(axis=(0, 1))
    return int(np.argmax(lesion_voxels)) if lesion_voxels.any() else depth // 2


def evidence_panels(
    patch_scores: pd.DataFrame,
    volumes: Mapping,
    ablated: Mapping,
    labels: Mapping,
    scan_ids: list[str],
) -> list[dict]:
    """The axial slice through each scan's largest lesion (or its middle), with the lesion
    evidence maps of the scan and of its ablated twin on the preprocessed grid. ``patch_scores``
    holds one stage's patches (``x``, ``y``, ``z``, ``patch_size``, ``lesion_evidence``)."""
    panels = []
    for scan_id in scan_ids:
        volume = reference_channel(np.asarray(volumes[scan_id]))
        label = np.asarray(labels[scan_id]) if scan_id in labels else np.zeros(volume.shape)
        depth = lesion_depth(label, volume.shape[2])
        panel = {"scan_id": scan_id, "image": axial(volume, depth), "label": axial(label, depth)}
        for variant in (ORIGINAL, ABLATED):
            rows = patch_scores[
                (patch_scores["scan_id"] == scan_id) & (patch_scores["variant"] == variant)
            ]
            if rows.empty:
                continue
            starts = rows[["x", "y", "z"]].to_numpy(dtype=int)
            size = int(rows["patch_size"].iloc[0])
            values = rows["lesion_evidence"].to_numpy()
            head = is_foreground(np.asarray(volumes[scan_id]))
            mapped = axial(evidence_map(volume.shape, starts, size, values, head), depth)
            if variant == ORIGINAL:
                panel["evidence"] = mapped
            else:
                panel["ablated_image"] = axial(
                    reference_channel(np.asarray(ablated[scan_id])), depth
                )
                panel["ablated_evidence"] = mapped
        panels.append(panel)
    return panels
