"""Projection heads mapping encoder features into the shared embedding space."""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["HEAD_KINDS", "ResidualProjectionHead", "build_projection_head"]


class ResidualProjectionHead(nn.Module):
    """The paper's head: Linear -> GELU -> Linear -> Dropout, plus the first Linear's output
    as a residual, then LayerNorm."""

    def __init__(self, in_dim: int, embed_dim: int = 512, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Linear(in_dim, embed_dim)
        self.activation = nn.GELU()
        self.fc = nn.Linear(embed_dim, embed_dim)
        self.dropout = nn.Dropout(dropout)
        self.norm = nn.LayerNorm(embed_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        projected = self.projection(features)
        refined = self.dropout(self.fc(self.activation(projected)))
        return self.norm(projected + refined)


HEAD_KINDS = ("residual", "linear")


def build_projection_head(
    kind: str, in_dim: int, embed_dim: int = 512, dropout: float = 0.1
) -> nn.Module:
    """``residual`` (the paper's head) or ``linear`` (a single bias-free Linear, as in CLIP).

    ``dropout`` applies to the residual head only.
    """
    if kind == "residual":
        return ResidualProjectionHead(in_dim, embed_dim, dropout)
    if kind == "linear":
        return nn.Linear(in_dim, embed_dim, bias=False)
    raise ValueError(f"unknown projection head {kind!r}; choose one of {list(HEAD_KINDS)}")
