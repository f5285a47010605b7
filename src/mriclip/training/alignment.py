"""CLIP alignment as a task of the training loop (:mod:`mriclip.training.engine`): vision,
text and head learning rates, freezing and locking, the alignment method's extra terms
(:mod:`mriclip.training.methods`), gradient-exact embedding accumulation, label-aware targets,
the clamped logit scale, and validation on groups of N·B pairs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from mriclip.models.clip import ClipModel
from mriclip.models.losses import positive_mask_from_keys
from mriclip.training.accumulation import accumulated_step
from mriclip.training.batching import load_batch
from mriclip.training.engine import Task, TrainingConfig, train
from mriclip.training.methods import (
    PRESENCE_HEADS,
    AlignmentMethod,
    freeze_stages,
    presence_term,
)


@dataclass(frozen=True)
class AlignmentConfig:
    """The alignment task's own ``alignment.training`` parameters (conf/base has them all)."""

    micro_batch_size: int  # B: what fits in memory
    accumulation_steps: int  # N: the loss sees N·B pairs
    lr_vision: float
    lr_text: float
    lr_heads: float
    # Label-aware targets: pairs with the same key are not negatives. "regions": same set of
    # lesion regions; "sentence": the same canonical sentence (same content, whatever the
    # paraphrase); null: plain CLIP (diagonal only).
    positive_key: str | None
    # Weight of the lesion-presence term (:func:`mriclip.training.methods.presence_term`);
    # 0 leaves it out.
    presence_weight: float
    # What its linear heads read, one term each: "embeddings" (the image tower's normalised
    # embeddings) and/or "features" (the image encoder's pooled features).
    presence_heads: Sequence[str]
    freeze_vision_stages: int | str
    # "all" locks the text tower: eval mode, each distinct sentence encoded once.
    freeze_text_stages: int | str
    keep: str  # best (lowest validation loss) | last

    def __post_init__(self) -> None:
        for name in ("micro_batch_size", "accumulation_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.positive_key not in (None, "regions", "sentence"):
            raise ValueError(
                f"positive_key must be null, 'regions' or 'sentence', got {self.positive_key!r}"
            )
        if self.presence_weight < 0:
            raise ValueError(f"presence_weight must be >= 0, got {self.presence_weight}")
        # One name alone is one head (`kedro run --params` cannot give a list of several).
        heads = self.presence_heads
        heads = (heads,) if isinstance(heads, str) else tuple(heads)
        object.__setattr__(self, "presence_heads", heads)
        if not heads or set(heads) - set(PRESENCE_HEADS) or len(set(heads)) < len(heads):
            raise ValueError(
                f"presence_heads must list some of {list(PRESENCE_HEADS)}, each once, got "
                f"{list(heads)}"
            )
        if self.keep not in ("best", "last"):
            raise ValueError(f"keep must be 'best' or 'last', got {self.keep!r}")


def to_micro_batch(
    model: ClipModel,
    batch: dict,
    device: torch.device,
    positive_key: str | None,
    presence: bool = False,
) -> dict:
    """Tokenise the sentences and move tensors to the device; add the label-aware key and,
    with ``presence``, ``"lesion"``: 1.0 where the item's sentence names a lesion."""
    tokens = model.text_encoder.tokenize(batch["sentence"])
    micro_batch = {
        "image": batch["image"].to(device, non_blocking=True),
        "input_ids": tokens["input_ids"].to(device),
        "attention_mask": tokens["attention_mask"].to(device),
    }
    if "views" in batch:  # SLIP's two augmented views of each cube
        micro_batch["views"] = batch["views"].to(device, non_blocking=True)
    if presence:
        named = [bool(key) for key in batch["key"]]
        micro_batch["lesion"] = torch.tensor(named, dtype=torch.float32, device=device)
    if positive_key is not None:
        micro_batch["key"] = batch["key"] if positive_key == "regions" else batch["content"]
    return micro_batch


@torch.no_grad()
def validation_loss(
    model: ClipModel, dataset: Dataset, config: AlignmentConfig, device: torch.device
) -> float:
    """Mean contrastive loss over the validation set in groups of N·B, as training sees it."""
    group = config.micro_batch_size * config.accumulation_steps
    total, count = 0.0, 0
    for start in range(0, len(dataset), group):
        indices = list(range(start, min(start + group, len(dataset))))
        if len(indices) < 2:  # a contrastive loss needs a negative
            continue
        batch = to_micro_batch(model, load_batch(dataset, indices), device, config.positive_key)
        image = model.encode_image(batch["image"])
        text = model.encode_text(batch["input_ids"], batch["attention_mask"])
        mask = positive_mask_from_keys(batch["key"], device) if "key" in batch else None
        total += float(model.contrastive_loss(image, text, mask)) * len(indices)
        count += len(indices)
    return total / max(1, count)


class AlignmentModules(nn.ModuleDict):
    """The CLIP model under ``"clip"`` beside a method's own modules. Its forward is the CLIP
    model's: a DistributedDataParallel wrapper of all of them runs that forward."""

    def forward(self, *inputs: torch.Tensor, **options) -> tuple[torch.Tensor, torch.Tensor]:
        return self["clip"](*inputs, **options)


class AlignmentTask(Task):
    """``validate`` may compute extra validation metrics (e.g. zero-shot AUC), logged as
    ``val_<name>`` beside ``val_loss``.

    The loop trains ``model``: the CLIP model under ``"clip"`` beside the method's own modules
    (SLIP's projection head, CoCa's decoder), which the saved CLIP model leaves out."""

    name = "alignment"

    def __init__(
        self,
        model: ClipModel,
        config: AlignmentConfig,
        method: AlignmentMethod,
        validate: Callable[[ClipModel], dict] | None = None,
    ) -> None:
        freeze_stages(model.image_encoder.stages(), config.freeze_vision_stages, "vision")
        text_stages = model.text_encoder.stages()
        if freeze_stages(text_stages, config.freeze_text_stages, "text") == len(text_stages):
            model.text_encoder.lock()
        modules, self.extra_terms = method.attach(model)
        if config.presence_weight > 0:
            for reads in config.presence_heads:
                name = PRESENCE_HEADS[reads]
                width = (
                    model.embed_dim if reads == "embeddings" else model.image_encoder.feature_dim
                )
                modules[f"{name}_head"] = nn.Linear(width, 1)
                self.extra_terms[name] = presence_term(
                    modules[f"{name}_head"], config.presence_weight, reads
                )
        self.clip, self.model = model, AlignmentModules({"clip": model, **modules})
        self.config, self.method, self.extra_validation = config, method, validate
        self.batch_size, self.batches_per_step = config.micro_batch_size, config.accumulation_steps
        self.keep_best = "val_loss" if config.keep == "best" else None

    def settings(self) -> dict:
        return {**asdict(self.config), "method": self.method.settings()}

    def param_groups(self) -> dict:
        heads = [
            (name, parameter)
            for name, parameter in self.model.named_parameters()
            if not name.startswith(("clip.image_encoder.", "clip.text_encoder."))
        ]
        return {
            "vision": (self.clip.image_encoder, self.config.lr_vision),
            "text": (self.clip.text_encoder, self.config.lr_text),
            "heads": (heads, self.config.lr_heads),
        }

    def compiled_parts(self) -> dict:
        # The image tower is the step's compute; the locked text tower runs once per distinct
        # sentence, on sequences of varying length that would make it recompile.
        return {"image_encoder": self.clip.image_encoder}

    def train_step(self, batches: list[dict], device: torch.device, cast) -> float:
        presence = self.config.presence_weight > 0
        micro_batches = [
            to_micro_batch(self.clip, batch, device, self.config.positive_key, presence)
            for batch in batches
        ]
        return accumulated_step(
            self.clip,
            micro_batches,
            autocast_dtype=cast,
            extra_terms=self.extra_terms,
            replica=self.replica,
        )

    def after_step(self) -> dict:
        self.clip.clamp_logit_scale_()
        logit_scale = float(self.clip.logit_scale.detach())
        return {"logit_scale": logit_scale, "temperature": 1.0 / logit_scale}

    def validate(self, val_set: Dataset, device: torch.device) -> dict:
        row = {"val_loss": validation_loss(self.clip, val_set, self.config, device)}
        if self.extra_validation is not None:
            row.update({f"val_{k}": v for k, v in self.extra_validation(self.clip).items()})
        return row


def train_alignment(
    model: ClipModel,
    train_set: Dataset,
    val_set: Dataset | None,
    training: TrainingConfig,
    config: AlignmentConfig,
    method: AlignmentMethod,
    validate: Callable[[ClipModel], dict] | None = None,
    on_validation: Callable[[dict], None] | None = None,
) -> tuple[ClipModel, pd.DataFrame]:
    """Train ``model`` in place with ``method``; returns the kept model (best or last, on the
    CPU) and the history (see :func:`mriclip.training.engine.train`)."""
    task = AlignmentTask(model, config, method, validate)
    return model, train(task, train_set, val_set, training, on_validation)
