"""AMAES-style masked autoencoder around any registered 3D encoder.

A ratio of cubic blocks of the input is replaced (by zeros or noise); a light decoder without
skip connections upsamples the encoder's deepest feature map back to the input grid; the
loss is MSE on every voxel or on masked voxels only.
"""

from __future__ import annotations

import math

import torch
from monai.networks.blocks import Convolution, UpSample
from torch import nn

from mriclip.models.encoders import INSTANCE_NORM

MASK_FILLS = ("zeros", "noise")  # what masked voxels become: zeros, or Gaussian noise


def block_mask(
    shape: tuple[int, int, int],
    batch_size: int,
    block_size: int,
    ratio: float,
    generator: torch.Generator | None = None,
    device: torch.device | str = "cpu",
) -> torch.Tensor:
    """Boolean mask (B, 1, D, H, W): exactly ``round(ratio * n_blocks)`` of the
    ``block_size``³ blocks of each sample are True (masked)."""
    if not 0.0 < ratio < 1.0:
        raise ValueError(f"mask ratio must be in (0, 1), got {ratio}")
    if any(size % block_size for size in shape):
        raise ValueError(
            f"input shape {shape} is not divisible by the mask block size {block_size}"
        )
    grid = [size // block_size for size in shape]
    n_blocks = math.prod(grid)
    n_masked = round(ratio * n_blocks)
    scores = torch.rand(batch_size, n_blocks, generator=generator)
    chosen = scores.argsort(dim=1)[:, :n_masked]
    blocks = torch.zeros(batch_size, n_blocks, dtype=torch.bool)
    blocks.scatter_(1, chosen, True)
    blocks = blocks.view(batch_size, 1, *grid)
    for axis in range(2, 5):
        blocks = blocks.repeat_interleave(block_size, dim=axis)
    return blocks.to(device)


def apply_mask(
    image: torch.Tensor,
    mask: torch.Tensor,
    fill: str = "zeros",
    generator=None,
    image_channels: int | None = None,
) -> torch.Tensor:
    """``image`` with the ``mask``ed voxels of its first ``image_channels`` channels (all by
    default) filled; later channels (grid coordinates) stay, since where a block lies is not
    what the model is asked to reconstruct."""
    if fill not in MASK_FILLS:
        raise ValueError(f"pretraining.mask_fill must be one of {MASK_FILLS}, got {fill!r}")
    channels = image.shape[1] if image_channels is None else image_channels
    shown, kept = image[:, :channels], image[:, channels:]
    if fill == "zeros":
        shown = shown.masked_fill(mask, 0.0)
    else:
        noise = torch.randn(shown.shape, generator=generator).to(image.device, image.dtype)
        shown = torch.where(mask, noise, shown)
    return torch.cat([shown, kept], dim=1)


class LightDecoder(nn.Module):
    """Upsampling decoder without skips: log2(downsample_factor) × (deconv ×2, conv)."""

    def __init__(
        self, in_channels: int, downsample_factor: int, out_channels: int = 1, min_channels: int = 8
    ) -> None:
        super().__init__()
        n_up = int(round(math.log2(downsample_factor)))
        if 2**n_up != downsample_factor:
            raise ValueError(f"downsample factor {downsample_factor} is not a power of two")
        layers, channels = [], in_channels
        for _ in range(n_up):
            nxt = max(min_channels, channels // 2)
            layers += [
                UpSample(3, channels, nxt, scale_factor=2, mode="deconv"),
                Convolution(3, nxt, nxt, kernel_size=3, norm=INSTANCE_NORM, act="gelu"),
            ]
            channels = nxt
        layers.append(nn.Conv3d(channels, out_channels, kernel_size=1))
        self.layers = nn.Sequential(*layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.layers(features)


class MaskedAutoencoder(nn.Module):
    def __init__(self, encoder: nn.Module) -> None:
        super().__init__()
        self.encoder = encoder
        # Reconstructs the image channels only, never the position channels.
        self.decoder = LightDecoder(
            encoder.map_channels, encoder.downsample_factor, encoder.in_channels
        )

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder.forward_features(image))


def reconstruction_loss(
    prediction: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, masked_only: bool
) -> torch.Tensor:
    """MSE over all voxels, or over the masked voxels only."""
    squared = (prediction.float() - target.float()) ** 2
    if not masked_only:
        return squared.mean()
    return squared[mask.expand_as(squared)].mean()


def unmasked_mean_baseline(
    target: torch.Tensor, masked_input: torch.Tensor, mask: torch.Tensor, masked_only: bool
) -> torch.Tensor:
    """The loss of copying the visible voxels and predicting the mean of the sample's visible
    voxels for every masked one: what a reconstruction must beat to have learnt anything."""
    masked_input = masked_input[:, : target.shape[1]]  # without position channels
    visible = ~mask
    means = (masked_input * visible).sum(dim=(1, 2, 3, 4), keepdim=True) / visible.sum(
        dim=(1, 2, 3, 4), keepdim=True
    ).clamp(min=1)
    prediction = torch.where(mask, means.expand_as(target), masked_input)
    return reconstruction_loss(prediction, target, mask, masked_only)
