"""What a pretrained encoder reconstructs: input, masked input and reconstruction of a few
held-out volumes, side by side (middle axial slices)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from mriclip.models.checkpoints import build_encoder_from_saved
from mriclip.models.mae import MaskedAutoencoder, apply_mask, block_mask
from mriclip.training.pretraining import pretraining_samples


def reconstruction_figure(
    bundle: Mapping, volumes: Mapping, scan_ids: Sequence[str], params: Mapping, seed: int
) -> Figure:
    """A row per scan of ``scan_ids``, masked as ``params["training"]`` masks in training
    (seeded by ``seed``), through the encoder and decoder of ``bundle``."""
    model = MaskedAutoencoder(build_encoder_from_saved(bundle))
    model.decoder.load_state_dict(bundle["decoder_state_dict"])
    model.eval()
    position = model.encoder.position_channels
    samples = pretraining_samples(volumes, scan_ids, params, seed, position, augment=False)
    training = params["training"]
    generator = torch.Generator().manual_seed(seed)
    figure = Figure(figsize=(7.5, 2.6 * len(scan_ids)))
    axes = figure.subplots(len(scan_ids), 3, squeeze=False)
    shown = model.encoder.in_channels
    for row in range(len(samples)):
        image = samples[row]["image"][None]
        # A single-sequence (BrainMVP) encoder is shown the stack's reference sequence.
        channels = samples[row]["target"].shape[0]
        image = torch.cat([image[:, :shown], image[:, channels:]], dim=1)
        mask = block_mask(
            tuple(image.shape[2:]),
            1,
            training["mask_block_size"],
            training["mask_ratio"],
            generator,
        )
        masked = apply_mask(image, mask, training["mask_fill"], generator, shown)
        with torch.no_grad():
            reconstruction = model(masked)
        middle = image.shape[-1] // 2
        for column, (title, volume) in enumerate(
            [("input", image), ("masked input", masked), ("reconstruction", reconstruction)]
        ):
            axes[row, column].imshow(np.rot90(volume[0, 0, :, :, middle].numpy()), cmap="gray")
            axes[row, column].set_title(f"{scan_ids[row]}: {title}", fontsize=8)
            axes[row, column].axis("off")
    figure.tight_layout()
    return figure
