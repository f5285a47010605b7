"""Embeddings with a trained CLIP model: of (image, sentence) items, and of the patches a scan
is scored with."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mriclip.evaluation.scan_scoring import patch_grid
from mriclip.imaging.position import with_position
from mriclip.models.clip import ClipModel
from mriclip.models.factory import embed_texts
from mriclip.training.batching import load_batch
from mriclip.training.runtime import autocast_dtype
from mriclip.training.samples import (
    ScanLesions,
    crop_with_padding,
    is_foreground,
    lesions_in_cube,
    spatial_shape,
    with_channels,
)


@torch.no_grad()
def embed_dataset(model: ClipModel, dataset: Dataset, batch_size: int = 8) -> dict:
    """Image and text embeddings of every item (eval mode, CPU numpy), with keys and ids."""
    model.eval()
    device = next(model.parameters()).device
    images, keys, scan_ids, sentences = [], [], [], []
    for start in range(0, len(dataset), batch_size):
        batch = load_batch(dataset, list(range(start, min(start + batch_size, len(dataset)))))
        images.append(model.encode_image(batch["image"].to(device)).float().cpu())
        keys += batch["key"]
        scan_ids += batch["scan_id"]
        sentences += batch["sentence"]
    return {
        "image": torch.cat(images).numpy(),
        "text": embed_texts(model, sentences).float().cpu().numpy(),
        "keys": keys,
        "scan_ids": scan_ids,
        "sentences": sentences,
    }


def label_matrix(keys: Sequence[str], regions: Sequence[str]) -> np.ndarray:
    """(n, k) 0/1 matrix from ";"-joined region keys."""
    labels = np.zeros((len(keys), len(regions)), dtype=int)
    index = {region: i for i, region in enumerate(regions)}
    for row, key in enumerate(keys):
        for region in filter(None, key.split(";")):
            labels[row, index[region]] = 1
    return labels


@torch.no_grad()
def embed_patches(
    model: ClipModel,
    volume: np.ndarray,
    starts: np.ndarray,
    patch_size: int,
    batch_size: int,
    mixed_precision_cpu: bool = False,
) -> np.ndarray:
    """(P, D) image embeddings of the ``patch_size``³ cubes of ``volume`` at ``starts`` (with
    their grid coordinates when the image encoder takes them); with ``mixed_precision_cpu``,
    the forwards run in bf16 autocast on a CPU that computes in bf16 natively."""
    model.eval()
    device = next(model.parameters()).device
    cast = autocast_dtype(device, False, mixed_precision_cpu)
    position = model.image_encoder.position_channels
    chunks = []
    for first in range(0, len(starts), batch_size):
        cubes = []
        for start in starts[first : first + batch_size]:
            cube = with_channels(crop_with_padding(volume, start, patch_size))
            grid = spatial_shape(volume)
            cubes.append(with_position(cube, start, grid) if position else cube)
        images = torch.stack(cubes).to(device)
        with torch.autocast(device.type, dtype=cast, enabled=cast is not None):
            chunks.append(model.encode_image(images).float().cpu().numpy())
    return np.concatenate(chunks)


def scan_patches(
    volume: np.ndarray, patch_size: int, stride: int, min_foreground_fraction: float
) -> np.ndarray:
    """Start corners of the head patches a scan is scored with; a volume no larger than a
    patch (volume mode) is its own single patch."""
    grid = spatial_shape(volume)
    if all(side <= patch_size for side in grid):
        return np.zeros((1, 3), dtype=int)
    return patch_grid(grid, patch_size, stride, is_foreground(volume), min_foreground_fraction)


def patch_lesion_truth(
    label: np.ndarray | None,
    starts: np.ndarray,
    patch_size: int,
    lesions: pd.DataFrame,
    min_visible_fraction: float,
) -> tuple[list[str], list[bool]]:
    """Per patch: the ";"-joined regions of the lesions it shows, and whether it cuts one
    (some voxels inside, too few to count: neither lesion nor lesion-free)."""
    if label is None or lesions.empty:
        return [""] * len(starts), [False] * len(starts)
    keys, cuts = [], []
    arrays = ScanLesions.from_table(lesions)
    for start in starts:
        visible, cut = lesions_in_cube(label, start, patch_size, arrays, min_visible_fraction)
        keys.append(";".join(sorted(set(arrays.regions[visible]))))
        cuts.append(bool(cut.any()))
    return keys, cuts
