"""BrainMVP: multi-modal pretraining of a single-channel encoder on naturally
grouped MRI sequences.

One encoder sees one sequence at a time, every sequence of a scan in turn. Per item, of its
stack one sequence is chosen to be reconstructed and another to help:

- **cross-modal reconstruction**: masked blocks of the chosen sequence are filled with the
  same voxels of the other sequence; the chosen sequence is reconstructed;
- **modality template distillation**: a second view, whose masked blocks are filled with a
  learnable template of the chosen sequence (one per sequence, patch-sized); it is
  reconstructed too, so the templates learn what each sequence looks like;
- **modality-aware contrastive learning**: the deepest features of the two views of the same
  item and sequence are positives, those of other items negatives (InfoNCE).
"""

from __future__ import annotations

import torch
from torch import nn

from mriclip.models.encoders import ImageEncoder
from mriclip.models.losses import clip_loss
from mriclip.models.mae import LightDecoder


def fill_blocks(image: torch.Tensor, mask: torch.Tensor, fill: torch.Tensor) -> torch.Tensor:
    """``image`` (B, 1, D, H, W) with its ``mask``ed voxels taken from ``fill`` (the same
    shape, or broadcastable to it)."""
    return torch.where(mask, fill.to(image.dtype), image)


def pick_sequences(
    batch_size: int, n_sequences: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per item, the sequence to reconstruct and another one, distinct and uniform."""
    if n_sequences < 2:
        raise ValueError(
            "pretraining.method brainmvp needs at least two sequences per scan (cross-modal "
            f"reconstruction), got {n_sequences}; set data_engineering.sequences to several, "
            "or use method: mae"
        )
    chosen = torch.randint(n_sequences, (batch_size,), generator=generator)
    other = (chosen + torch.randint(1, n_sequences, (batch_size,), generator=generator)) % (
        n_sequences
    )
    return chosen, other


class BrainMVP(nn.Module):
    """A single-channel encoder, a light decoder back to the input grid, one learnable
    template per sequence and a projection head for the contrastive term.

    Args:
        encoder: a registered encoder built with ``in_channels=1`` (position channels allowed).
        n_sequences: the sequences of the stack, one template each.
        patch_size: the side of the pretraining crops, the templates' side.
        projection_dim: width of the contrastive projection.
    """

    def __init__(
        self, encoder: ImageEncoder, n_sequences: int, patch_size: int, projection_dim: int
    ) -> None:
        super().__init__()
        if encoder.in_channels != 1:
            raise ValueError(
                f"BrainMVP's encoder takes one sequence at a time (in_channels 1), got "
                f"{encoder.in_channels}"
            )
        self.encoder = encoder
        self.decoder = LightDecoder(encoder.map_channels, encoder.downsample_factor, 1)
        self.templates = nn.Parameter(torch.zeros(n_sequences, 1, *[patch_size] * 3))
        self.projection = nn.Sequential(
            nn.Linear(encoder.map_channels, encoder.map_channels),
            nn.GELU(),
            nn.Linear(encoder.map_channels, projection_dim),
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The reconstruction of ``image`` (B, 1 [+ 3 position], D, H, W) and the L2-normalised
        projection of its mean-pooled deepest features."""
        features = self.encoder.forward_features(image)
        projected = self.projection(features.flatten(2).mean(dim=2))
        return self.decoder(features), nn.functional.normalize(projected.float(), dim=1)


def modality_contrastive_loss(
    first: torch.Tensor, second: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Symmetric InfoNCE between the two views' projections: row ``i`` of both is item ``i``
    in its chosen sequence."""
    return clip_loss(first, second, torch.tensor(1.0 / temperature, device=first.device))
