"""Masked-autoencoder pretraining loop (AMAES): random crops of unlabelled volumes, "fullaug"
(spatial augmentation on input and target, intensity augmentation on the input only),
block masking, MSE, AdamW with warm-up + cosine, periodic resumable checkpoints."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from mriclip.imaging.position import with_position
from mriclip.models.mae import (
    MaskedAutoencoder,
    apply_mask,
    block_mask,
    reconstruction_loss,
    unmasked_mean_baseline,
)
from mriclip.training.loop import (
    BatchStream,
    Checkpointer,
    check_finite,
    load_batch,
    restore_snapshot,
    training_snapshot,
)
from mriclip.training.runtime import autocast_dtype, pick_device
from mriclip.training.samples import VolumeSource, crop_with_padding, plain_tensor
from mriclip.training.schedule import param_groups, warmup_cosine

logger = logging.getLogger(__name__)


class PretrainingSamples(Dataset):
    """Random ``patch_size``³ crops of each volume; ``image`` is augmented spatially and in
    intensity, ``target`` only spatially (with the same draw). With ``position_channels``,
    ``image`` also carries the crop's grid coordinates (:mod:`mriclip.imaging.position`)."""

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
        self.rng = np.random.default_rng(seed)

    def __len__(self) -> int:
        return len(self.scan_ids)

    def __getitem__(self, index: int) -> dict:
        volume = self.volumes[self.scan_ids[index]]
        high = [max(1, size - self.patch_size + 1) for size in volume.shape]
        start = [int(self.rng.integers(0, h)) for h in high]
        crop = torch.from_numpy(crop_with_padding(volume, start, self.patch_size))[None]
        sample = {"input": crop, "target": crop.clone()}
        for transform in (self.spatial, self.intensity):  # reseeded so resume replays them
            if transform is not None:
                transform.set_random_state(int(self.rng.integers(2**31)))
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
    steps: int = 200
    batch_size: int = 4
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 20
    mask_ratio: float = 0.6
    mask_block_size: int = 4
    mask_fill: str = "zeros"  # zeros | noise
    masked_only_loss: bool = False  # AMAES default: MSE on the whole volume
    grad_clip_norm: float | None = 1.0
    val_every: int = 50
    checkpoint_dir: str | None = None
    checkpoint_every: int = 50
    resume: bool = False
    device: str = "auto"
    mixed_precision: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "val_every", "checkpoint_every", "mask_block_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"pretraining.{name} must be >= 1, got {getattr(self, name)}")
        if not 0 < self.mask_ratio < 1:
            raise ValueError(f"pretraining.mask_ratio must be in (0, 1), got {self.mask_ratio}")
        if self.mask_fill not in ("zeros", "noise"):
            raise ValueError(
                f"pretraining.mask_fill must be zeros or noise, got {self.mask_fill!r}"
            )


@torch.no_grad()
def reconstruction_metrics(
    model: MaskedAutoencoder,
    dataset: Dataset,
    config: PretrainingConfig,
    device: torch.device,
    seed: int = 1234,
) -> dict:
    """Mean loss on ``dataset`` with the same crops and masks every time, beside the
    unmasked-mean baseline."""
    model.eval()
    dataset.rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    losses, baselines = [], []
    for index in range(len(dataset)):
        batch = load_batch(dataset, [index])
        target = batch["target"].to(device)
        mask = block_mask(
            tuple(target.shape[2:]), 1, config.mask_block_size, config.mask_ratio, generator, device
        )
        masked = apply_mask(
            batch["image"].to(device), mask, config.mask_fill, generator, target.shape[1]
        )
        prediction = model(masked)
        losses.append(float(reconstruction_loss(prediction, target, mask, config.masked_only_loss)))
        baselines.append(
            float(unmasked_mean_baseline(target, masked, mask, config.masked_only_loss))
        )
    model.train()
    return {
        "reconstruction_loss": float(np.mean(losses)),
        "unmasked_mean_loss": float(np.mean(baselines)),
    }


def train_masked_autoencoder(
    model: MaskedAutoencoder,
    train_set: PretrainingSamples,
    val_set: PretrainingSamples | None,
    config: PretrainingConfig,
) -> tuple[MaskedAutoencoder, pd.DataFrame]:
    device = pick_device(config.device)
    model.to(device)
    optimizer = torch.optim.AdamW(param_groups({"model": (model, config.lr)}, config.weight_decay))
    scheduler = warmup_cosine(optimizer, config.warmup_steps, config.steps)
    stream = BatchStream(len(train_set), min(config.batch_size, len(train_set)), config.seed)
    generator = torch.Generator().manual_seed(config.seed)
    checkpoints = Checkpointer(config.checkpoint_dir)
    history: list[dict] = []
    start_step = 0
    resumed = checkpoints.load("last") if config.resume else None
    if resumed is not None:
        history, start_step = restore_snapshot(
            resumed, model, optimizer, scheduler, stream, train_set, asdict(config)
        )
        generator.set_state(resumed["mask_rng"])

    cast = autocast_dtype(device, config.mixed_precision)
    model.train()
    progress = tqdm(
        range(start_step, config.steps),
        initial=start_step,
        total=config.steps,
        desc="pretraining",
        unit="step",
        disable=None,
    )
    for step in progress:
        tick = time.perf_counter()
        batch = load_batch(train_set, stream.next_batch())
        target = batch["target"].to(device)
        mask = block_mask(
            tuple(target.shape[2:]),
            target.shape[0],
            config.mask_block_size,
            config.mask_ratio,
            generator,
            device,
        )
        masked = apply_mask(
            batch["image"].to(device), mask, config.mask_fill, generator, target.shape[1]
        )
        with torch.autocast(device.type, dtype=cast or torch.float32, enabled=cast is not None):
            prediction = model(masked)
        loss = reconstruction_loss(prediction, target, mask, config.masked_only_loss)
        check_finite(loss.item(), step + 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if config.grad_clip_norm:
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip_norm)
        optimizer.step()
        scheduler.step()
        row = {
            "step": step + 1,
            "loss": float(loss),
            "lr": optimizer.param_groups[0]["lr"],
            "samples_per_s": target.shape[0] / (time.perf_counter() - tick),
        }
        last_step = step + 1 == config.steps
        if val_set is not None and ((step + 1) % config.val_every == 0 or last_step):
            row.update(
                {
                    f"val_{k}": v
                    for k, v in reconstruction_metrics(model, val_set, config, device).items()
                }
            )
        history.append(row)
        progress.set_postfix(loss=f"{row['loss']:.4f}", sps=f"{row['samples_per_s']:.1f}")
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
                    mask_rng=generator.get_state(),
                    config=asdict(config),
                ),
            )
    return model.cpu(), pd.DataFrame(history)
