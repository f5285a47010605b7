"""One pretraining run from the ``pretraining`` parameters: the method's model around a new
encoder, trained on the training volumes, validated on held-out ones, saved as an encoder
bundle that alignment starts from (:mod:`mriclip.models.checkpoints`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from torch import nn

from mriclip.models.brainmvp import BrainMVP
from mriclip.models.checkpoints import save_encoder
from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import MaskedAutoencoder
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


def new_encoder(params: Mapping, in_channels: int) -> nn.Module:
    """The encoder ``params["encoder"]`` names, untrained, for ``in_channels`` channels."""
    kwargs = {**params["encoder"]["kwargs"], "in_channels": in_channels}
    return build_image_encoder(params["encoder"]["name"], **kwargs)


def pretraining_model(params: Mapping, config: PretrainingConfig, channels: int):
    """``(model, task type, task config)`` of ``params["method"]`` for volumes of
    ``channels`` sequences: MAE sees them all at once, BrainMVP one at a time."""
    method = params["method"]
    if method == "mae":
        return MaskedAutoencoder(new_encoder(params, channels)), MaskedAutoencoderTask, config
    if method == "brainmvp":
        config = BrainMVPConfig(
            batch_size=config.batch_size,
            lr=config.lr,
            masked_only_loss=config.masked_only_loss,
            **params["brainmvp"],
        )
        encoder = new_encoder(params, 1)
        model = BrainMVP(encoder, channels, params["patch_size"], config.projection_dim)
        return model, BrainMVPTask, config
    raise ValueError(f"pretraining.method must be one of {PRETRAINING_METHODS}, got {method!r}")


def pretrain_encoder_bundle(
    volumes: Mapping,
    train_ids: Sequence[str],
    held_out: Sequence[str],
    params: Mapping,
    seed: int,
) -> tuple[dict, pd.DataFrame, dict]:
    """Pretrain on ``train_ids`` of ``volumes`` (loaders), validate on ``held_out`` (none: no
    validation). Returns the encoder bundle (with the decoder's weights, for the figure), the
    history, and a summary: reconstruction loss on the held-out volumes beside the
    unmasked-mean baseline's."""
    training, config = configs_from_params(
        params["training"], PretrainingConfig, seed, "pretraining.training"
    )
    model, task_type, config = pretraining_model(params, config, stack_channels(volumes, train_ids))
    position = model.encoder.position_channels
    train_set = pretraining_samples(volumes, train_ids, params, seed, position)
    val_set = None
    if held_out:
        val_set = pretraining_samples(volumes, held_out, params, seed + 7, position, augment=False)
    model, history = pretrain(task_type, model, train_set, val_set, training, config)
    summary = {
        "method": params["method"],
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
