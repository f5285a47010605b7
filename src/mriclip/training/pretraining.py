"""Masked-autoencoder pretraining (AMAES) as a task of the training loop
(:mod:`mriclip.training.engine`): random crops of unlabelled volumes, "fullaug" (spatial
augmentation on input and target, intensity augmentation on the input only), block masking,
MSE, and validation beside the unmasked-mean baseline."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset

from mriclip.imaging.position import with_position
from mriclip.models.mae import (
    MASK_FILLS,
    MaskedAutoencoder,
    apply_mask,
    block_mask,
    reconstruction_loss,
    unmasked_mean_baseline,
)
from mriclip.training.engine import Task, TrainingConfig, train
from mriclip.training.loop import ItemKey, item_rng, load_batch
from mriclip.training.samples import VolumeSource, crop_with_padding, plain_tensor


class PretrainingSamples(Dataset):
    """Random ``patch_size``³ crops of each volume; ``image`` is augmented spatially and in
    intensity, ``target`` only spatially (with the same draw). With ``position_channels``,
    ``image`` also carries the crop's grid coordinates (:mod:`mriclip.imaging.position`).

    Indexed by an ``(epoch, index)`` key (see ``loop.item_rng``): the crop and augmentation
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
        high = [max(1, size - self.patch_size + 1) for size in volume.shape]
        start = [int(rng.integers(0, h)) for h in high]
        crop = torch.from_numpy(crop_with_padding(volume, start, self.patch_size))[None]
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
            image = with_position(image, start, volume.shape)
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


def train_masked_autoencoder(
    model: MaskedAutoencoder,
    train_set: PretrainingSamples,
    val_set: PretrainingSamples | None,
    training: TrainingConfig,
    config: PretrainingConfig,
) -> tuple[MaskedAutoencoder, pd.DataFrame]:
    """Train ``model`` in place; returns it (on the CPU) and the history. A cohort smaller
    than the batch size trains on batches of the whole cohort."""
    batch_size = min(config.batch_size, len(train_set))
    task = MaskedAutoencoderTask(model, config, training.seed, batch_size)
    return model, train(task, train_set, val_set, training)
