"""Lesion-ablated twins of preprocessed scans, the evaluation's controls: made once per change.

A scan's twin is its raw twin (the phantom's exact counterfactual, rendered without lesions)
through the scan's own preprocessing, resampled with the registration transform the scan's
preprocessing report keeps (not estimated again), or else the preprocessed scan with its
labelled lesions inpainted (:mod:`mriclip.imaging.ablation`).

Twins are kept in a store (``mriclip.datasets.ScanStore``, catalog entry
``lesion_ablated_cache``) under a fingerprint of what made them: the scan's preprocessing
fingerprint (its image and label files and the settings), the raw twin files' sha256, and the
ablation settings. An unchanged re-run reads them back and makes none.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from mriclip.imaging.ablation import inpaint_lesions
from mriclip.imaging.collection import Store, on_grid_of, scan_files, source_sha256
from mriclip.imaging.preprocessing import (
    PreprocessingConfig,
    preprocess_twin,
    registration_transform,
)
from mriclip.imaging.validation import as_3d

logger = logging.getLogger(__name__)

#: Part of every twin's fingerprint: bump it when twins are made differently.
TWIN_VERSION = 1
COUNTERFACTUAL, INPAINTED = "counterfactual", "inpainted"


@dataclass(frozen=True)
class TwinSources:
    """What twins are made from: the raw images and raw twins by file name, the preprocessed
    volumes and label maps by scan id (``mriclip.training.samples.VolumeSource``), each scan's
    preprocessing report row and cache fingerprint (None when it has none) by scan id."""

    raw_images: Mapping[str, Callable]
    raw_twins: Mapping[str, Callable]
    volumes: Mapping
    labels: Mapping
    reports: Mapping[str, dict]
    fingerprints: Mapping[str, dict | None]


def _method(scan, sources: TwinSources) -> str | None:
    if all(file in sources.raw_twins for file in scan_files(scan)):
        return COUNTERFACTUAL
    return INPAINTED if scan.scan_id in sources.labels else None


def twin_fingerprint(scan, method: str, sources: TwinSources, settings: Mapping) -> dict | None:
    """What the scan's twin is made from, or None when that cannot be known (the scan's
    preprocessing left no fingerprint): such a twin is made every time."""
    scan_print = sources.fingerprints.get(scan.scan_id)
    if scan_print is None:
        return None
    prints = {"version": TWIN_VERSION, "method": method, "scan": scan_print}
    if method == COUNTERFACTUAL:
        prints["twin_sha256"] = [source_sha256(sources.raw_twins[f]) for f in scan_files(scan)]
    else:
        prints["dilation"] = [settings["dilation_factor"], settings["dilation_voxels"]]
    return prints


def make_twin(scan, method: str, sources: TwinSources, settings, config) -> np.ndarray:
    """The twin of a NIfTI-catalog row; a channel stack (several sequences) gets the twin of
    each channel, stacked alike."""
    if method == COUNTERFACTUAL:
        image = sources.raw_images[scan.image_file]()
        data = as_3d(image)
        transform = registration_transform(dict(sources.reports.get(scan.scan_id, {})))
        channels = [
            preprocess_twin(
                image,
                data,
                as_3d(on_grid_of(sources.raw_twins[file](), image)),
                config,
                transform,
            )
            for file in scan_files(scan)
        ]
        return channels[0] if len(channels) == 1 else np.stack(channels)
    volume = np.asarray(sources.volumes[scan.scan_id])
    label = np.asarray(sources.labels[scan.scan_id])
    channels = [
        inpaint_lesions(channel, label, settings["dilation_factor"], settings["dilation_voxels"])
        for channel in (volume if volume.ndim == 4 else [volume])
    ]
    return channels[0] if volume.ndim == 3 else np.stack(channels)


def ablated_twins(
    scans,
    sources: TwinSources,
    settings: Mapping,
    config: PreprocessingConfig,
    store: Store,
) -> tuple[dict[str, Callable[[], np.ndarray]], list[dict]]:
    """Twins of ``scans`` (NIfTI-catalog rows), from ``store`` where it holds one with the
    same fingerprint, else made and stored. Returns loaders of the stored twins by scan id,
    and one report row per scan: how its twin was made (or why it has none)."""
    twins, rows, n_reused = {}, [], 0
    for scan in tqdm(scans, desc="ablated twins", unit="scan", disable=None):
        if scan.scan_id not in sources.volumes:
            continue  # preprocessing failed; listed in catalog_problems
        method = _method(scan, sources)
        if method is None:
            rows.append(
                {
                    "scan_id": scan.scan_id,
                    "method": "none: no label map and no raw twin, so the scan has no "
                    "ablated control",
                }
            )
            continue
        try:
            prints = twin_fingerprint(scan, method, sources, settings)
            stored = store.record(scan.scan_id)
            if prints is not None and stored is not None and stored["fingerprint"] == prints:
                n_reused += 1
            else:
                twin = make_twin(scan, method, sources, settings, config)
                store.write(scan.scan_id, {"twin": twin}, {"fingerprint": prints})
        except Exception as error:  # noqa: BLE001 - one bad twin must not end the run
            method = f"none: the twin failed ({type(error).__name__}: {error})"
            logger.warning("lesion-ablated twin of %s: %s", scan.scan_id, method)
        else:
            twins[scan.scan_id] = store.loader(scan.scan_id, "twin")
        rows.append({"scan_id": scan.scan_id, "method": method})
    store.retain(list(twins))
    logger.info(
        "lesion-ablated twins: %d reused unchanged, %d made", n_reused, len(twins) - n_reused
    )
    return twins, rows
