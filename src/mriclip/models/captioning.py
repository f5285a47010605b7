"""CoCa's captioning decoder: a small transformer decoder that predicts a sample's sentence,
token by token, from the image encoder's deepest feature map (the ``coca`` alignment method)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["CaptionDecoder"]


class CaptionDecoder(nn.Module):
    """Causal self-attention over the sentence's tokens, cross-attention to the image's
    feature-map voxels (each a token), next-token logits from the tied token embedding.

    Args:
        feature_channels: channels of the image encoder's deepest map (``map_channels``).
        vocab_size: the text tokenizer's vocabulary size (``len(tokenizer)``).
        max_length: the longest token sequence (the text encoder's ``max_length``).
        width: the decoder's model dimension.
        layers: decoder layers.
        heads: attention heads per layer (``width`` must be divisible by them).
        dropout: dropout inside each decoder layer.
    """

    def __init__(
        self,
        feature_channels: int,
        vocab_size: int,
        max_length: int,
        width: int,
        layers: int,
        heads: int,
        dropout: float,
    ) -> None:
        super().__init__()
        if width % heads:
            raise ValueError(f"alignment.coca.width ({width}) must be divisible by heads ({heads})")
        self.memory = nn.Linear(feature_channels, width)
        self.tokens = nn.Embedding(vocab_size, width)
        self.positions = nn.Embedding(max_length, width)
        # GPT-2's small init: with nn.Embedding's N(0, 1) the tied output layer starts with
        # logits of std sqrt(width), a cross entropy several times ln(vocab).
        for embedding in (self.tokens, self.positions):
            nn.init.normal_(embedding.weight, std=0.02)
        layer = nn.TransformerDecoderLayer(
            width, heads, 4 * width, dropout, activation="gelu", batch_first=True, norm_first=True
        )
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.norm = nn.LayerNorm(width)

    def forward(self, feature_map: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """``(B, C, d, h, w)`` features and ``(B, L)`` token ids -> ``(B, L, vocab)`` logits of
        each position's next token (position ``t`` sees tokens ``<= t`` and the whole image)."""
        memory = self.memory(feature_map.flatten(2).transpose(1, 2))
        length = input_ids.shape[1]
        places = torch.arange(length, device=input_ids.device)
        tokens = self.tokens(input_ids) + self.positions(places)
        causal = nn.Transformer.generate_square_subsequent_mask(
            length, device=input_ids.device, dtype=tokens.dtype
        )
        hidden = self.decoder(tokens, memory, tgt_mask=causal, tgt_is_causal=True)
        return self.norm(hidden) @ self.tokens.weight.T

    def token_losses(
        self, feature_map: torch.Tensor, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> torch.Tensor:
        """``(B, 2)``: per sample, the summed next-token cross entropy over its real tokens
        and how many tokens that is. Sums, not means, so that a loss over many micro-batches
        can divide by the tokens of all of them (the token mean of one big batch)."""
        logits = self(feature_map, input_ids[:, :-1])
        targets, real = input_ids[:, 1:], attention_mask[:, 1:].to(logits.dtype)
        losses = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")
        return torch.stack([(losses * real).sum(dim=1), real.sum(dim=1)], dim=1)
