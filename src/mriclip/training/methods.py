"""The alignment methods beside plain CLIP (``alignment.method``):

- ``clip``: the two towers and the contrastive loss;
- ``lit``: the pretrained image tower locked (eval mode, no gradient): only the text tower
  (as ``freeze_text_stages`` allows) and the heads learn;
- ``flip``: a fraction of the image's blocks dropped from every training item (its voxels
  zeroed: the encoders are convolutional or windowed and need the whole grid, so a dropped
  block is blanked rather than removed); evaluation sees whole images;
- ``slip``: plus SimCLR's NT-Xent term between two augmented views of each training cube,
  through the image encoder and a projection head of its own;
- ``coca``: plus a captioning loss: a small transformer decoder predicts the sentence from the
  image's feature map (:class:`mriclip.models.captioning.CaptionDecoder`).

The extra terms take part in the accumulated step (:class:`ExtraTerm`), so accumulation stays
gradient-exact. Partial freezing (``freeze_vision_stages``, ``freeze_text_stages``) applies to
every method. Validation loss and evaluation use the contrastive model alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from mriclip.imaging.augmentation import AugmentationConfig, full_augmentation
from mriclip.models.captioning import CaptionDecoder
from mriclip.models.clip import ClipModel
from mriclip.models.heads import ResidualProjectionHead
from mriclip.models.losses import nt_xent_loss
from mriclip.training.accumulation import ExtraTerm, MicroBatch

ALIGNMENT_METHODS = ("clip", "lit", "flip", "slip", "coca")


def freeze_stages(stages: list[nn.Module], n_frozen: int | str, what: str) -> int:
    """Freeze the first ``n_frozen`` stages (partial freezing, ``freeze_vision_stages`` and
    ``freeze_text_stages``; ``"all"``: every one). Returns how many were frozen."""
    if n_frozen == "all":
        n_frozen = len(stages)
    if not isinstance(n_frozen, int) or not 0 <= n_frozen <= len(stages):
        raise ValueError(f"cannot freeze {n_frozen} {what} stages: it has {len(stages)}")
    for stage in stages[:n_frozen]:
        for parameter in stage.parameters():
            parameter.requires_grad_(False)
    return n_frozen


@dataclass(frozen=True)
class FlipConfig:
    mask_ratio: float  # fraction of the block_size³ blocks dropped from each training image
    block_size: int

    def __post_init__(self) -> None:
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"alignment.flip.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.block_size < 1:
            raise ValueError(f"alignment.flip.block_size must be >= 1, got {self.block_size}")


@dataclass(frozen=True)
class SlipConfig:
    weight: float  # of the SimCLR term beside the contrastive loss
    temperature: float
    projection_dim: int
    dropout: float  # in the projection head
    augmentation: Mapping  # AugmentationConfig fields: how the two views are drawn

    def __post_init__(self) -> None:
        if self.weight < 0 or self.temperature <= 0:
            raise ValueError(
                "alignment.slip needs weight >= 0 and temperature > 0, got "
                f"{self.weight} and {self.temperature}"
            )
        if not AugmentationConfig(**self.augmentation).active:
            raise ValueError(
                "alignment.slip.augmentation has every probability at 0: the two views would "
                "be the same image"
            )


@dataclass(frozen=True)
class CocaConfig:
    weight: float  # of the captioning loss beside the contrastive loss
    width: int
    layers: int
    heads: int
    dropout: float

    def __post_init__(self) -> None:
        if self.weight < 0:
            raise ValueError(f"alignment.coca.weight must be >= 0, got {self.weight}")


@dataclass(frozen=True)
class AlignmentMethod:
    """``alignment.method`` with every method's parameters (conf/base has them all)."""

    name: str
    flip: FlipConfig
    slip: SlipConfig
    coca: CocaConfig

    def __post_init__(self) -> None:
        if self.name not in ALIGNMENT_METHODS:
            raise ValueError(
                f"alignment.method must be one of {ALIGNMENT_METHODS}, got {self.name!r}"
            )

    @classmethod
    def from_params(cls, alignment: Mapping) -> AlignmentMethod:
        """From the ``alignment`` parameters (``method``, ``flip``, ``slip``, ``coca``)."""
        return cls(
            alignment["method"],
            FlipConfig(**alignment["flip"]),
            SlipConfig(**alignment["slip"]),
            CocaConfig(**alignment["coca"]),
        )

    def settings(self) -> dict:
        """The method and its own parameters (what checkpoints and the saved model record)."""
        own = getattr(self, self.name, None)
        return {"name": self.name, **(asdict(own) if own is not None else {})}

    def training_items(self, seed: int) -> dict:
        """``AlignmentSamples`` keywords for the training items: FLIP's dropped blocks,
        SLIP's two views (drawn with the items' own (seed, epoch, index) randomness)."""
        if self.name == "flip":
            return {"drop_blocks": (self.flip.mask_ratio, self.flip.block_size)}
        if self.name == "slip":
            augmentation = AugmentationConfig(**self.slip.augmentation)
            return {"views": full_augmentation(augmentation, ["image"], seed)}
        return {}

    def attach(self, model: ClipModel) -> tuple[dict[str, nn.Module], dict[str, ExtraTerm]]:
        """Lock the image tower (``lit``); return the method's own modules (trained at the
        heads' learning rate) and its extra loss terms."""
        if self.name == "lit":
            model.image_encoder.lock()
        if self.name == "slip":
            head = ResidualProjectionHead(
                model.image_encoder.feature_dim, self.slip.projection_dim, self.slip.dropout
            )
            return {"simclr_head": head}, {"simclr": simclr_term(model, head, self.slip)}
        if self.name == "coca":
            text = model.text_encoder
            decoder = CaptionDecoder(
                model.image_encoder.map_channels,
                len(text.tokenizer),
                text.max_length,
                self.coca.width,
                self.coca.layers,
                self.coca.heads,
                self.coca.dropout,
            )
            return {"caption_decoder": decoder}, {
                "caption": caption_term(model, decoder, self.coca.weight)
            }
        return {}, {}


# The terms are methods of small classes rather than closures so that a task holding them can
# be pickled to distributed training workers (mriclip.training.distributed.launch).


def simclr_term(model: ClipModel, head: nn.Module, config: SlipConfig) -> ExtraTerm:
    """SLIP's term: NT-Xent between the projected, normalised embeddings of each item's two
    views (``"views"``: ``(B, 2, C, D, H, W)``), the other items' views as negatives."""
    term = _SimClr(model, head, config)
    return ExtraTerm(term.encode, term.loss)


def caption_term(model: ClipModel, decoder: CaptionDecoder, weight: float) -> ExtraTerm:
    """CoCa's term: next-token cross entropy of the sentence given the image, the mean over
    every real token of the step (so a micro-batch of long sentences weighs as it would in
    one big batch)."""
    term = _Caption(model, decoder, weight)
    return ExtraTerm(term.encode, term.loss)


#: What a presence head may read (``alignment.training.presence_heads``) -> the name of its term
#: (its head: ``<name>_head``).
PRESENCE_HEADS = {"embeddings": "presence", "features": "presence_features"}


def presence_term(head: nn.Module, weight: float, reads: str = "embeddings") -> ExtraTerm:
    """The lesion-presence term (``alignment.training.presence_weight``): a linear ``head`` on
    the image tower's ``reads`` (``"embeddings"``, normalised, or the encoder's pooled
    ``"features"``) predicts whether each item's sentence names a lesion (``"lesion"``, 0/1),
    binary cross-entropy averaged over the step's items. The contrastive loss learns lesion
    presence only through the sentences' embeddings, beside region and diagnosis; this term
    gives the image tower that signal directly. It reads what the image tower's one forward
    gives, so it costs no forward of its own."""
    term = _Presence(head, weight)
    return ExtraTerm(term.targets, term.loss, reads=reads)


@dataclass(frozen=True)
class _SimClr:
    model: ClipModel
    head: nn.Module
    config: SlipConfig

    def encode(self, batch: MicroBatch, device: torch.device) -> torch.Tensor:
        views = batch["views"].to(device, non_blocking=True)
        features = self.model.image_encoder(views.flatten(0, 1))
        return F.normalize(self.head(features), dim=-1).unflatten(0, views.shape[:2])

    def loss(self, embeddings: torch.Tensor) -> torch.Tensor:
        first, second = embeddings[:, 0], embeddings[:, 1]
        return self.config.weight * nt_xent_loss(first, second, self.config.temperature)


@dataclass(frozen=True)
class _Caption:
    model: ClipModel
    decoder: CaptionDecoder
    weight: float

    def encode(self, batch: MicroBatch, device: torch.device) -> torch.Tensor:
        features = self.model.image_encoder.forward_features(batch["image"].to(device))
        return self.decoder.token_losses(
            features, batch["input_ids"].to(device), batch["attention_mask"].to(device)
        )

    def loss(self, rows: torch.Tensor) -> torch.Tensor:
        return self.weight * rows[:, 0].sum() / rows[:, 1].sum()


@dataclass(frozen=True)
class _Presence:
    head: nn.Module
    weight: float

    def targets(self, batch: MicroBatch, device: torch.device) -> torch.Tensor:
        return batch["lesion"].to(device, torch.float32)[:, None]

    def loss(self, lesion: torch.Tensor, image_output: torch.Tensor) -> torch.Tensor:
        logits = self.head(image_output)[:, 0]
        targets = lesion[:, 0].detach().to(logits.dtype)
        return self.weight * F.binary_cross_entropy_with_logits(logits, targets)
