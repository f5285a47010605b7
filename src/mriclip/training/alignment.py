"""The CLIP alignment loop: AdamW with vision/text/head learning rates, warm-up + cosine,
gradient-exact embedding accumulation, validation, best/last checkpoints and resume."""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mriclip.models.clip import ClipModel
from mriclip.models.losses import positive_mask_from_keys
from mriclip.training.accumulation import accumulated_step
from mriclip.training.loop import (
    BatchStream,
    Checkpointer,
    check_finite,
    freeze_stages,
    load_batch,
    restore_snapshot,
    training_snapshot,
)
from mriclip.training.runtime import autocast_dtype, pick_device
from mriclip.training.schedule import param_groups, warmup_cosine

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class AlignmentConfig:
    steps: int = 200
    micro_batch_size: int = 4  # B: what fits in memory
    accumulation_steps: int = 4  # N: the loss sees N·B pairs
    lr_vision: float = 1e-4
    lr_text: float = 1e-5
    lr_heads: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    grad_clip_norm: float | None = 1.0
    # Label-aware targets: pairs with the same key are not negatives. "regions": same set of
    # lesion regions; "sentence": the same canonical sentence (same content, whatever the
    # paraphrase); null: plain CLIP (diagonal only).
    positive_key: str | None = "regions"
    freeze_vision_stages: int | str = 0
    # "all" locks the text tower: eval mode, each distinct sentence encoded once.
    freeze_text_stages: int | str = 0
    val_every: int = 50
    keep: str = "best"  # best (lowest validation loss) | last
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    resume: bool = False
    device: str = "auto"
    mixed_precision: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # channels-last 3D memory format on CUDA
    seed: int = 0

    def __post_init__(self) -> None:
        for name in (
            "steps",
            "micro_batch_size",
            "accumulation_steps",
            "val_every",
            "checkpoint_every",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"alignment.{name} must be >= 1, got {getattr(self, name)}")
        if self.positive_key not in (None, "regions", "sentence"):
            raise ValueError(
                f"alignment.positive_key must be null, 'regions' or 'sentence', "
                f"got {self.positive_key!r}"
            )
        if self.keep not in ("best", "last"):
            raise ValueError(f"alignment.keep must be 'best' or 'last', got {self.keep!r}")


def to_micro_batch(
    model: ClipModel, batch: dict, device: torch.device, positive_key: str | None
) -> dict:
    """Tokenise the sentences and move tensors to the device; add the label-aware key."""
    tokens = model.text_encoder.tokenize(batch["sentence"])
    micro_batch = {
        "image": batch["image"].to(device, non_blocking=True),
        "input_ids": tokens["input_ids"].to(device),
        "attention_mask": tokens["attention_mask"].to(device),
    }
    if positive_key is not None:
        micro_batch["key"] = batch["key"] if positive_key == "regions" else batch["content"]
    return micro_batch


@torch.no_grad()
def validation_loss(
    model: ClipModel, dataset: Dataset, config: AlignmentConfig, device: torch.device
) -> float:
    """Mean contrastive loss over the validation set in groups of N·B, as training sees it."""
    model.eval()
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
    model.train()
    return total / max(1, count)


def train_alignment(
    model: ClipModel,
    train_set: Dataset,
    val_set: Dataset | None,
    config: AlignmentConfig,
    validate: Callable[[ClipModel], dict] | None = None,
    on_validation: Callable[[dict], None] | None = None,
) -> tuple[ClipModel, pd.DataFrame]:
    """Train ``model`` in place; returns the kept model (best or last) and the history.

    ``validate`` may compute extra validation metrics (e.g. zero-shot AUC); they are logged
    in the history at each validation step. ``on_validation`` sees each validation row (e.g.
    an Optuna trial reporting it, and pruning by raising)."""
    device = pick_device(config.device)
    freeze_stages(model.image_encoder.stages(), config.freeze_vision_stages, "vision")
    text_stages = model.text_encoder.stages()
    if freeze_stages(text_stages, config.freeze_text_stages, "text") == len(text_stages):
        model.text_encoder.lock()
    model.to(device)
    if config.channels_last and device.type == "cuda":
        model.image_encoder.to(memory_format=torch.channels_last_3d)
    heads = [
        (n, p)
        for n, p in model.named_parameters()
        if not n.startswith(("image_encoder.", "text_encoder."))
    ]
    optimizer = torch.optim.AdamW(
        param_groups(
            {
                "vision": (model.image_encoder, config.lr_vision),
                "text": (model.text_encoder, config.lr_text),
                "heads": (heads, config.lr_heads),
            },
            config.weight_decay,
        )
    )
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    stream = BatchStream(len(train_set), config.micro_batch_size, config.seed)
    checkpoints = Checkpointer(config.checkpoint_dir)
    history: list[dict] = []
    best = {"val_loss": float("inf"), "state": None, "step": 0}
    start_step = 0

    resumed = checkpoints.load("last") if config.resume else None
    if resumed is not None:
        history, start_step = restore_snapshot(
            resumed, model, optimizer, scheduler, stream, train_set, asdict(config)
        )
        best_saved = checkpoints.load("best")
        if best_saved is not None:
            best = {
                "val_loss": best_saved["val_loss"],
                "state": best_saved["model"],
                "step": best_saved["step"],
            }

    cast = autocast_dtype(device, config.mixed_precision)
    model.train()
    progress = tqdm(
        range(start_step, config.steps),
        initial=start_step,
        total=config.steps,
        desc="alignment",
        unit="step",
        disable=None,
    )
    for step in progress:
        tick = time.perf_counter()
        micro_batches = [
            to_micro_batch(
                model, load_batch(train_set, stream.next_batch()), device, config.positive_key
            )
            for _ in range(config.accumulation_steps)
        ]
        optimizer.zero_grad(set_to_none=True)
        loss = accumulated_step(model, micro_batches, autocast_dtype=cast)
        check_finite(loss, step + 1)
        if config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        learning_rates = {
            f"lr_{group['name']}": group["lr"]
            for group in optimizer.param_groups
            if not group["name"].endswith("_no_decay")
        }
        optimizer.step()
        model.clamp_logit_scale_()
        scheduler.step()
        logit_scale = float(model.logit_scale.detach())
        samples = config.micro_batch_size * config.accumulation_steps
        row = {
            "step": step + 1,
            "loss": loss,
            "logit_scale": logit_scale,
            "temperature": 1.0 / logit_scale,
            "samples_per_s": samples / (time.perf_counter() - tick),
            **learning_rates,
        }
        last_step = step + 1 == config.steps
        if val_set is not None and ((step + 1) % config.val_every == 0 or last_step):
            val_set.rng = np.random.default_rng(config.seed)  # the same patches every time
            row["val_loss"] = validation_loss(model, val_set, config, device)
            if validate is not None:
                val_set.rng = np.random.default_rng(config.seed)
                model.eval()
                row.update({f"val_{k}": v for k, v in validate(model).items()})
                model.train()
            if row["val_loss"] < best["val_loss"]:
                best = {
                    "val_loss": row["val_loss"],
                    "step": step + 1,
                    "state": copy.deepcopy(model.state_dict()),
                }
                checkpoints.save(
                    "best", {"model": best["state"], "step": step + 1, "val_loss": row["val_loss"]}
                )
            if on_validation is not None:
                on_validation(row)
        history.append(row)
        progress.set_postfix(
            loss=f"{loss:.3f}", T=f"{row['temperature']:.3f}", sps=f"{row['samples_per_s']:.1f}"
        )
        if (step + 1) % config.checkpoint_every == 0 or last_step:
            checkpoints.save(
                "last",
                training_snapshot(
                    step + 1,
                    history,
                    model,
                    optimizer,
                    scheduler,
                    stream,
                    train_set,
                    config=asdict(config),
                ),
            )

    if config.keep == "best" and val_set is None:
        logger.warning(
            "alignment.keep is 'best' but there is no validation set: keeping the last model"
        )
    if config.keep == "best" and best["state"] is not None:
        logger.info(
            "keeping the best model: step %d, validation loss %.4f", best["step"], best["val_loss"]
        )
        model.load_state_dict(best["state"])
    return model.cpu(), pd.DataFrame(history)
