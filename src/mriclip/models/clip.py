"""The CLIP model: two encoders, two projection heads, a learnable temperature and a loss."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from mriclip.models.heads import build_projection_head
from mriclip.models.losses import clip_loss, siglip_loss

__all__ = ["DEFAULT_INIT_TEMPERATURE", "LOSSES", "PAPER_INIT_TEMPERATURE", "ClipModel"]

LOSSES = ("clip", "siglip")
# CLIP starts at tau=0.07; SigLIP at logit scale 10 (tau=0.1) with bias -10.
DEFAULT_INIT_TEMPERATURE = {"clip": 0.07, "siglip": 0.1}
# The reference implementation multiplies cosines by 1.351 at the start (see ClipModel).
PAPER_INIT_TEMPERATURE = 1 / 1.351


class ClipModel(nn.Module):
    """Image and text towers projected to one L2-normalised ``embed_dim`` space.

    ``image_encoder`` maps ``(B, 1, D, H, W)`` to ``(B, feature_dim)`` and has ``feature_dim``
    (see ``mriclip.models.encoders``); ``text_encoder`` maps ``(input_ids, attention_mask)`` to
    ``(B, hidden_size)`` and has ``hidden_size`` (see ``mriclip.text.encoder``). Each gets its own
    projection head (``residual`` or ``linear``, see ``mriclip.models.heads``).

    Temperature. The learnable scalar parameter ``log_logit_scale`` holds ``ln(1 / tau)``,
    initialised to ``ln(1 / init_temperature)``. Logits are ``logit_scale * cos`` with
    ``logit_scale = exp(clamp(log_logit_scale, 0, ln(max_logit_scale)))``, i.e. the scale is kept
    in ``[1, max_logit_scale]`` and tau in ``[1 / max_logit_scale, 1]``. The clamp is applied to
    the value used in every forward, so logits are bounded even before the first optimiser step.
    Training loops should also call :meth:`clamp_logit_scale_` after each optimiser step (as CLIP
    does): otherwise the raw parameter can drift past the bound, where the forward clamp gives it
    zero gradient and it could not come back.

    Mapping the paper's 1.351. The reference implementation multiplies the cosine similarities
    by a learnable factor initialised at 1.351 and used linearly (not exponentiated), clamped to
    [0, 4.6]. Its starting logits are ``1.351 * cos``, a temperature of ``1 / 1.351 = 0.740``.
    Here ``init_temperature`` is that tau, so the paper-equivalent start is
    ``init_temperature=PAPER_INIT_TEMPERATURE`` (0.740, ``log_logit_scale = ln 1.351 = 0.301``).
    Only the start matches: we learn the scale in log space, as CLIP does, and cap it at
    ``max_logit_scale`` (100 by default; 4.6 reproduces the reference's ceiling, tau >= 0.217).
    Defaults: tau = 0.07 for ``loss="clip"`` (CLIP), 0.1 for ``loss="siglip"`` (SigLIP's scale 10).

    SigLIP also learns ``logit_bias`` (initialised at ``init_logit_bias``, SigLIP's -10);
    for ``loss="clip"`` the attribute is ``None``. ``learn_temperature=False`` freezes the scale.
    """

    def __init__(
        self,
        image_encoder: nn.Module,
        text_encoder: nn.Module,
        embed_dim: int = 512,
        head: str = "residual",
        dropout: float = 0.1,
        init_temperature: float | None = None,
        max_logit_scale: float = 100.0,
        learn_temperature: bool = True,
        loss: str = "clip",
        init_logit_bias: float = -10.0,
    ) -> None:
        super().__init__()
        if loss not in LOSSES:
            raise ValueError(f"unknown loss {loss!r}; choose one of {list(LOSSES)}")
        if init_temperature is None:
            init_temperature = DEFAULT_INIT_TEMPERATURE[loss]
        if not 1 / max_logit_scale <= init_temperature <= 1:
            raise ValueError(
                f"init_temperature={init_temperature} is outside the clamped range "
                f"[1/max_logit_scale, 1] = [{1 / max_logit_scale:.4g}, 1]"
            )
        self.image_encoder = image_encoder
        self.text_encoder = text_encoder
        self.embed_dim = embed_dim
        self.image_head = build_projection_head(head, image_encoder.feature_dim, embed_dim, dropout)
        self.text_head = build_projection_head(head, text_encoder.hidden_size, embed_dim, dropout)
        self.loss_name = loss
        self.max_log_logit_scale = math.log(max_logit_scale)
        self.log_logit_scale = nn.Parameter(
            torch.tensor(math.log(1 / init_temperature)), requires_grad=learn_temperature
        )
        self.logit_bias = (
            nn.Parameter(torch.tensor(float(init_logit_bias))) if loss == "siglip" else None
        )

    @property
    def logit_scale(self) -> torch.Tensor:
        """``1 / tau``, differentiable, clamped to ``[1, max_logit_scale]``."""
        return self.log_logit_scale.clamp(0.0, self.max_log_logit_scale).exp()

    @torch.no_grad()
    def clamp_logit_scale_(self) -> None:
        """Clamp the raw parameter into range in place; call after each optimiser step."""
        self.log_logit_scale.clamp_(0.0, self.max_log_logit_scale)

    def encode_image(self, image: torch.Tensor, with_features: bool = False) -> torch.Tensor:
        """``(B, embed_dim)`` normalised embeddings; ``with_features``: the image encoder's
        pooled features they project follow on each row (``(B, embed_dim + feature_dim)``), one
        forward for a loss that reads both."""
        features = self.image_encoder(image)
        embeddings = F.normalize(self.image_head(features), dim=-1)
        return torch.cat([embeddings, features], dim=-1) if with_features else embeddings

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_head(self.text_encoder(input_ids, attention_mask)), dim=-1)

    def forward(
        self,
        image: torch.Tensor,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        image_features: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image_emb, text_emb)``, both ``(B, embed_dim)`` and L2-normalised; with
        ``image_features``, ``image_emb`` is followed by the pooled features on each row
        (:meth:`encode_image`)."""
        image_output = self.encode_image(image, with_features=image_features)
        return image_output, self.encode_text(input_ids, attention_mask)

    def contrastive_loss(
        self,
        image_emb: torch.Tensor,
        text_emb: torch.Tensor,
        positive_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """This model's loss (``clip`` or ``siglip``) with its current temperature (and bias)."""
        if self.loss_name == "clip":
            return clip_loss(image_emb, text_emb, self.logit_scale, positive_mask)
        return siglip_loss(image_emb, text_emb, self.logit_scale, self.logit_bias, positive_mask)
