"""Pretraining tasks of the training loop (:mod:`mriclip.training.engine`) on random crops
of unlabelled volumes with "fullaug" (spatial augmentation on input and target, intensity
augmentation on the input only), validated beside the unmasked-mean baseline:
masked-autoencoder pretraining (AMAES: block masking, MSE), and BrainMVP
(:mod:`mriclip.models.brainmvp`: cross-modal reconstruction, modality templates, a
modality-aware contrastive term) on stacks of sequences."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from mriclip.imaging.augmentation import (
    AugmentationConfig,
    intensity_augmentation,
    spatial_augmentation,
)
from mriclip.imaging.position import with_position
from mriclip.models.brainmvp import BrainMVP, fill_blocks, modality_contrastive_loss, pick_sequences
from mriclip.models.mae import (
    MASK_FILLS,
    MaskedAutoencoder,
    apply_mask,
    block_mask,
    reconstruction_loss,
    unmasked_mean_baseline,
)
from mriclip.training.batching import ItemKey, load_batch
from mriclip.training.engine import Task, TrainingConfig, train
from mriclip.training.rng import item_rng
from mriclip.training.samples import (
    VolumeSource,
    crop_with_padding,
    plain_tensor,
    spatial_shape,
    with_channels,
)

#: ``pretraining.method``: AMAES-style masked autoencoder, or BrainMVP on several sequences.
PRETRAINING_METHODS = ("mae", "brainmvp")


class PretrainingSamples(Dataset):
    """Random ``patch_size``³ crops of each volume; ``image`` is augmented spatially and in
    intensity, ``target`` only spatially (with the same draw). With ``position_channels``,
    ``image`` also carries the crop's grid coordinates (:mod:`mriclip.imaging.position`).

    Indexed by an ``(epoch, index)`` key (see ``rng.item_rng``): the crop and augmentation
    come from (seed, epoch, index), so a key always gives the same item."""

    def __init__(
        self,
        volumes: Mapping[str, Callable[[], np.ndarray] | np.ndarray],
        scan_ids: list[str],
        patch_size: int,
        spatial: Callable[[dict], dict] | None = None,
        intensity: Callable[[dict], dict] | None = None,
        seed: int = 0,
        position_channels: bool = False,
    ) -> None:
        if not scan_ids:
            raise ValueError("pretraining got no volumes; run data_engineering first")
        self.volumes = VolumeSource(volumes)
        self.scan_ids, self.patch_size = list(scan_ids), patch_size
        self.spatial, self.intensity = spatial, intensity
        self.position_channels = position_channels
        self.seed = seed

    def __len__(self) -> int:
        return len(self.scan_ids)

    def __getitem__(self, key: ItemKey) -> dict:
        index, rng = item_rng(self.seed, key)
        volume = self.volumes[self.scan_ids[index]]
        high = [max(1, size - self.patch_size + 1) for size in spatial_shape(volume)]
        start = [int(rng.integers(0, h)) for h in high]
        crop = with_channels(crop_with_padding(volume, start, self.patch_size))
        sample = {"input": crop, "target": crop.clone()}
        for transform in (self.spatial, self.intensity):
            if transform is not None:
                transform.set_random_state(int(rng.integers(2**31)))
        if self.spatial is not None:
            sample = self.spatial(sample)
        if self.intensity is not None:
            sample = {**sample, "input": self.intensity({"input": sample["input"]})["input"]}
        image = plain_tensor(sample["input"])
        if self.position_channels:
            image = with_position(image, start, spatial_shape(volume))
        return {"image": image, "target": plain_tensor(sample["target"])}


@dataclass(frozen=True)
class PretrainingConfig:
    """The pretraining task's own ``pretraining.training`` parameters (conf/base has them)."""

    batch_size: int
    lr: float
    mask_ratio: float
    mask_block_size: int
    mask_fill: str  # zeros | noise
    masked_only_loss: bool  # AMAES: false, MSE on the whole volume

    def __post_init__(self) -> None:
        for name in ("batch_size", "mask_block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.mask_fill not in MASK_FILLS:
            raise ValueError(f"mask_fill must be one of {MASK_FILLS}, got {self.mask_fill!r}")


class MaskedAutoencoderTask(Task):
    """Masks come from the task's own generator (one per DDP rank), which checkpoints save;
    validation draws its masks from a fresh one, so every validation sees the same. Under DDP
    the gradient is the mean over every rank's batch."""

    name = "pretraining"

    def __init__(
        self, model: MaskedAutoencoder, config: PretrainingConfig, seed: int, batch_size: int
    ) -> None:
        self.model, self.config, self.seed, self.batch_size = model, config, seed, batch_size

    def settings(self) -> dict:
        return asdict(self.config)

    def param_groups(self) -> dict:
        return {"model": (self.model, self.config.lr)}

    def on_rank(self, rank: int) -> None:
        self.generator = torch.Generator().manual_seed(self.seed + rank)

    def _masked(self, batch: dict, device: torch.device, generator: torch.Generator):
        target = batch["target"].to(device, non_blocking=True)
        mask = block_mask(
            tuple(target.shape[2:]),
            target.shape[0],
            self.config.mask_block_size,
            self.config.mask_ratio,
            generator,
            device,
        )
        image = batch["image"].to(device, non_blocking=True)
        masked = apply_mask(image, mask, self.config.mask_fill, generator, target.shape[1])
        return masked, target, mask

    def train_step(self, batches: list[dict], device: torch.device, cast) -> float:
        (batch,) = batches
        masked, target, mask = self._masked(batch, device, self.generator)
        with torch.autocast(device.type, dtype=cast, enabled=cast is not None):
            prediction = self.replica(masked)
        loss = reconstruction_loss(prediction, target, mask, self.config.masked_only_loss)
        loss.backward()
        return loss.item()

    @torch.no_grad()
    def validate(self, val_set: Dataset, device: torch.device) -> dict:
        """Mean loss on ``val_set`` (its items never vary), beside the unmasked-mean baseline."""
        generator = torch.Generator().manual_seed(self.seed)
        losses, baselines = [], []
        only_masked = self.config.masked_only_loss
        for index in range(len(val_set)):
            masked, target, mask = self._masked(load_batch(val_set, [index]), device, generator)
            prediction = self.model(masked)
            losses.append(float(reconstruction_loss(prediction, target, mask, only_masked)))
            baselines.append(float(unmasked_mean_baseline(target, masked, mask, only_masked)))
        return {
            "val_reconstruction_loss": float(np.mean(losses)),
            "val_unmasked_mean_loss": float(np.mean(baselines)),
        }

    def state_dict(self) -> dict:
        return {"mask_rng": self.generator.get_state()}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["mask_rng"])


def pretrain(
    task_type: type[MaskedAutoencoderTask | BrainMVPTask],
    model: MaskedAutoencoder | BrainMVP,
    train_set: PretrainingSamples,
    val_set: PretrainingSamples | None,
    training: TrainingConfig,
    config: PretrainingConfig | BrainMVPConfig,
) -> tuple[nn.Module, pd.DataFrame]:
    """Train ``model`` in place with a task of ``task_type`` (MaskedAutoencoderTask,
    BrainMVPTask) on batches of ``config.batch_size`` (the whole cohort when smaller); returns
    it (on the CPU) and the history."""
    batch_size = min(config.batch_size, len(train_set))
    task = task_type(model, config, training.seed, batch_size)
    return model, train(task, train_set, val_set, training)


@dataclass(frozen=True)
class BrainMVPConfig:
    """The BrainMVP task's settings: the ``pretraining.brainmvp`` parameters (conf/base has
    them) with ``batch_size``, ``lr`` and ``masked_only_loss`` of ``pretraining.training``."""

    batch_size: int
    lr: float
    masked_only_loss: bool
    mask_ratio: float
    mask_block_size: int
    reconstruction_weight: float  # of each reconstruction: cross-modal and template view
    contrastive_weight: float
    contrastive_warmup_steps: int  # steps before the contrastive term is switched on
    temperature: float
    projection_dim: int

    def __post_init__(self) -> None:
        for name in ("batch_size", "mask_block_size", "projection_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must be in (0, 1), got {self.mask_ratio}")
        for name in ("reconstruction_weight", "contrastive_weight", "contrastive_warmup_steps"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class BrainMVPTask(Task):
    """BrainMVP on items whose ``image``/``target`` are crops of a stack of sequences (then
    any position channels). Sequence choices and masks come from the task's own generator,
    which checkpoints save with the step count (the contrastive warm-up); validation draws
    from a fresh one, so every validation sees the same."""

    name = "pretraining"

    def __init__(self, model: BrainMVP, config: BrainMVPConfig, seed: int, batch_size: int) -> None:
        self.model, self.config, self.seed, self.batch_size = model, config, seed, batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.steps_done = 0
        self.last_terms: dict[str, float] = {}

    def settings(self) -> dict:
        return {"method": "brainmvp", **asdict(self.config)}

    def param_groups(self) -> dict:
        return {"model": (self.model, self.config.lr)}

    def views(self, batch: dict, device: torch.device, generator: torch.Generator) -> dict:
        """The two masked views of each item's chosen sequence, their masks and its target."""
        target = batch["target"].to(device, non_blocking=True)
        image = batch["image"].to(device, non_blocking=True)
        n_items, n_sequences = target.shape[:2]
        chosen, other = pick_sequences(n_items, n_sequences, generator)
        items = torch.arange(n_items)
        position = image[:, n_sequences:]  # grid coordinates, when the encoder takes them
        sequence = image[items, chosen][:, None]
        masks = [
            block_mask(
                tuple(target.shape[2:]),
                n_items,
                self.config.mask_block_size,
                self.config.mask_ratio,
                generator,
                device,
            )
            for _ in range(2)
        ]
        cross = fill_blocks(sequence, masks[0], image[items, other][:, None])
        template = fill_blocks(sequence, masks[1], self.model.templates[chosen.to(device)])
        return {
            "cross_modal": torch.cat([cross, position], dim=1),
            "template": torch.cat([template, position], dim=1),
            "masks": masks,
            "target": target[items, chosen][:, None],
        }

    def train_step(self, batches: list[dict], device: torch.device, cast) -> float:
        (batch,) = batches
        views = self.views(batch, device, self.generator)
        with torch.autocast(device.type, dtype=cast, enabled=cast is not None):
            cross, cross_projection = self.model(views["cross_modal"])
            template, template_projection = self.model(views["template"])
        only_masked, target = self.config.masked_only_loss, views["target"]
        terms = {
            "cross_modal_loss": reconstruction_loss(cross, target, views["masks"][0], only_masked),
            "template_loss": reconstruction_loss(template, target, views["masks"][1], only_masked),
        }
        loss = self.config.reconstruction_weight * (
            terms["cross_modal_loss"] + terms["template_loss"]
        )
        if self.steps_done >= self.config.contrastive_warmup_steps:
            terms["contrastive_loss"] = modality_contrastive_loss(
                cross_projection, template_projection, self.config.temperature
            )
            loss = loss + self.config.contrastive_weight * terms["contrastive_loss"]
        loss.backward()
        self.steps_done += 1
        self.last_terms = {name: term.item() for name, term in terms.items()}
        return loss.item()

    def after_step(self) -> dict:
        return self.last_terms

    @torch.no_grad()
    def validate(self, val_set: Dataset, device: torch.device) -> dict:
        """Mean cross-modal and template reconstruction losses on ``val_set`` (its items never
        vary), beside the unmasked-mean baseline of the cross-modal view."""
        generator = torch.Generator().manual_seed(self.seed)
        only_masked = self.config.masked_only_loss
        losses, templates, baselines = [], [], []
        for index in range(len(val_set)):
            views = self.views(load_batch(val_set, [index]), device, generator)
            target, (cross_mask, template_mask) = views["target"], views["masks"]
            cross = self.model(views["cross_modal"])[0]
            template = self.model(views["template"])[0]
            losses.append(float(reconstruction_loss(cross, target, cross_mask, only_masked)))
            templates.append(
                float(reconstruction_loss(template, target, template_mask, only_masked))
            )
            baselines.append(
                float(unmasked_mean_baseline(target, views["cross_modal"], cross_mask, only_masked))
            )
        return {
            "val_reconstruction_loss": float(np.mean(losses)),
            "val_template_loss": float(np.mean(templates)),
            "val_unmasked_mean_loss": float(np.mean(baselines)),
        }

    def state_dict(self) -> dict:
        return {"mask_rng": self.generator.get_state(), "steps_done": self.steps_done}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["mask_rng"])
        self.steps_done = state["steps_done"]


def pretraining_samples(
    volumes: dict,
    scan_ids: list[str],
    params: dict,
    seed: int,
    position_channels: bool,
    augment: bool = True,
) -> PretrainingSamples:
    """The MAE crops of ``scan_ids`` with ``params`` (``pretraining``'s): augmented for
    training, plain (``augment=False``) for validation and figures."""
    spatial = intensity = None
    if augment:
        augmentation = AugmentationConfig(**params["augmentation"])
        # Each item seeds them with its own draw (PretrainingSamples).
        spatial = spatial_augmentation(augmentation, ["input", "target"])
        intensity = intensity_augmentation(augmentation, ["input"])
    return PretrainingSamples(
        volumes, scan_ids, params["patch_size"], spatial, intensity, seed, position_channels
    )
