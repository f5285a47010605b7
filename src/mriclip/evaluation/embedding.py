"""Embeddings of a dataset of (image, sentence) items with a trained CLIP model."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from mriclip.models.clip import ClipModel
from mriclip.models.factory import embed_texts
from mriclip.training.loop import load_batch


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
