"""Thin nodes of the pretraining pipeline (AMAES-style masked autoencoder or BrainMVP)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from mriclip.imaging.collection import Store, preprocess_catalog
from mriclip.imaging.file_index import parameters_contract
from mriclip.imaging.preprocessing import PreprocessingConfig
from mriclip.imaging.validation import build_unlabelled_catalog
from mriclip.models.brainmvp import BrainMVP
from mriclip.models.checkpoints import build_encoder_from_saved, save_encoder
from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import MaskedAutoencoder, apply_mask, block_mask
from mriclip.splits import in_split
from mriclip.training.engine import configs_from_params
from mriclip.training.pretraining import (
    PRETRAINING_METHODS,
    BrainMVPConfig,
    BrainMVPTask,
    MaskedAutoencoderTask,
    PretrainingConfig,
    pretrain,
    pretraining_samples,
)
from mriclip.training.samples import stack_channels


def preprocess_unlabelled(
    unlabelled_images: dict[str, Callable],
    unlabelled_preprocessing_cache: Store,
    data_engineering: dict,
) -> tuple[dict, pd.DataFrame]:
    """Validate and preprocess extra unlabelled scans exactly like the labelled ones (in
    parallel, reusing unchanged scans from the cache), by the same data contract (with
    ``data_engineering.sequences``, a scan is its sequences' files, stacked as channels); the
    volumes are loaders, saved lazily."""
    contract = parameters_contract(
        data_engineering["sequences"], data_engineering["missing_sequences"]
    )
    catalog, problems = build_unlabelled_catalog(
        unlabelled_images,
        data_engineering["on_invalid"],
        contract,
        data_engineering["max_abs_intensity"],
    )
    done, failures = preprocess_catalog(
        catalog,
        unlabelled_images,
        {},
        PreprocessingConfig(**data_engineering["preprocessing"]),
        unlabelled_preprocessing_cache,
        data_engineering["workers"],
        data_engineering["dask_scheduler"],
        data_engineering["scan_timeout_s"],
    )
    failures.raise_if_any(data_engineering["on_invalid"])
    volumes = {f"unlabelled_{k}": v for k, v in done.loaders("volume").items()}
    return volumes, pd.concat([problems, failures.table()], ignore_index=True)


def _encoder(params: dict, in_channels: int):
    kwargs = {**params["encoder"]["kwargs"], "in_channels": in_channels}
    return build_image_encoder(params["encoder"]["name"], **kwargs)


def pretrain_encoder(
    preprocessed_volumes: dict,
    unlabelled_volumes: dict,
    splits: pd.DataFrame,
    params: dict,
    seed: int,
) -> tuple[dict, pd.DataFrame, dict]:
    """Pretrain on the training split's volumes plus any unlabelled ones; measure
    reconstruction on the held-out test split's volumes (never trained on)."""
    volumes = {**preprocessed_volumes, **unlabelled_volumes}
    train_ids = sorted(in_split(splits, "train")["scan_id"]) + sorted(unlabelled_volumes)
    held_out = sorted(in_split(splits, "test")["scan_id"])
    training, config = configs_from_params(
        params["training"], PretrainingConfig, seed, "pretraining.training"
    )
    channels = stack_channels(volumes, train_ids)
    method = params["method"]
    if method == "mae":
        encoder = _encoder(params, channels)
        model, task_type = MaskedAutoencoder(encoder), MaskedAutoencoderTask
    elif method == "brainmvp":
        config = BrainMVPConfig(
            batch_size=config.batch_size,
            lr=config.lr,
            masked_only_loss=config.masked_only_loss,
            **params["brainmvp"],
        )
        encoder = _encoder(params, 1)  # one sequence at a time
        model = BrainMVP(encoder, channels, params["patch_size"], config.projection_dim)
        task_type = BrainMVPTask
    else:
        raise ValueError(f"pretraining.method must be one of {PRETRAINING_METHODS}, got {method!r}")
    position = encoder.position_channels
    train_set = pretraining_samples(volumes, train_ids, params, seed, position)
    val_set = None
    if held_out:
        val_set = pretraining_samples(volumes, held_out, params, seed + 7, position, augment=False)
    model, history = pretrain(task_type, model, train_set, val_set, training, config)
    summary = {
        "method": method,
        "n_train_volumes": len(train_ids),
        "n_held_out_volumes": len(held_out),
    }
    if val_set is not None:  # the loop validates at its last step
        final = history.iloc[-1]
        summary["reconstruction_loss"] = float(final["val_reconstruction_loss"])
        summary["unmasked_mean_loss"] = float(final["val_unmasked_mean_loss"])
        summary["beats_unmasked_mean"] = (
            summary["reconstruction_loss"] < summary["unmasked_mean_loss"]
        )
    bundle = save_encoder(model.encoder, model.encoder.build_config)
    bundle["decoder_state_dict"] = model.decoder.state_dict()
    bundle["pretraining"] = {**summary, "steps": training.steps}
    return bundle, history, summary


def plot_reconstructions(
    pretrained_encoder: dict,
    preprocessed_volumes: dict,
    splits: pd.DataFrame,
    params: dict,
    seed: int,
) -> Figure:
    """Input / masked input / reconstruction, middle axial slices of a few held-out volumes."""
    model = MaskedAutoencoder(build_encoder_from_saved(pretrained_encoder))
    model.decoder.load_state_dict(pretrained_encoder["decoder_state_dict"])
    model.eval()
    held_out = sorted(in_split(splits, "test")["scan_id"])[: params["n_figure_volumes"]]
    position = model.encoder.position_channels
    samples = pretraining_samples(
        preprocessed_volumes, held_out, params, seed, position, augment=False
    )
    training = params["training"]
    generator = torch.Generator().manual_seed(seed)
    figure = Figure(figsize=(7.5, 2.6 * len(held_out)))
    axes = figure.subplots(len(held_out), 3, squeeze=False)
    shown = model.encoder.in_channels
    for row in range(len(samples)):
        image = samples[row]["image"][None]
        # A single-sequence (BrainMVP) encoder is shown the stack's reference sequence.
        channels = samples[row]["target"].shape[0]
        image = torch.cat([image[:, :shown], image[:, channels:]], dim=1)
        mask = block_mask(
            tuple(image.shape[2:]),
            1,
            training["mask_block_size"],
            training["mask_ratio"],
            generator,
        )
        masked = apply_mask(
            image, mask, training["mask_fill"], generator, model.encoder.in_channels
        )
        with torch.no_grad():
            reconstruction = model(masked)
        middle = image.shape[-1] // 2
        for column, (title, volume) in enumerate(
            [("input", image), ("masked input", masked), ("reconstruction", reconstruction)]
        ):
            axes[row, column].imshow(np.rot90(volume[0, 0, :, :, middle].numpy()), cmap="gray")
            axes[row, column].set_title(f"{held_out[row]}: {title}", fontsize=8)
            axes[row, column].axis("off")
    figure.tight_layout()
    return figure
