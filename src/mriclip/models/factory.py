"""Build, save and rebuild CLIP models from plain configs (the open_clip "factory" idea).

A saved model is a bundle ``{"config": ..., "state_dict": ...}`` of plain values and tensors,
so the catalog stores it with ``weights_only`` safety and any later node can rebuild it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch

from mriclip.models.checkpoints import build_encoder_from_saved, load_encoder_weights
from mriclip.models.clip import ClipModel
from mriclip.models.encoders import ImageEncoder, build_image_encoder
from mriclip.text.encoder import TextEncoder

logger = logging.getLogger(__name__)


def initial_image_encoder(
    image_init: str,
    encoder_params: Mapping,
    pretrained_encoder: Mapping | None,
    in_channels: int = 1,
) -> ImageEncoder:
    """``pretrained``: the pretraining pipeline's encoder (its own config wins, but for its
    input layer, inflated to ``in_channels``); ``random``: fresh weights from
    ``encoder_params``; anything else: a path to external weights loaded into an encoder
    built from ``encoder_params``. ``in_channels``: the volumes' image channels (sequences)."""
    if image_init == "pretrained":
        if pretrained_encoder is None:
            raise ValueError(
                "alignment.image_init is 'pretrained' but no pretrained_encoder exists: run "
                "`kedro run --pipeline pretraining` first, or set alignment.image_init to "
                "'random' or to a checkpoint path"
            )
        logger.info("image encoder: pretrained (%s)", pretrained_encoder["config"])
        return build_encoder_from_saved(pretrained_encoder, in_channels)
    kwargs = {**encoder_params.get("kwargs", {}), "in_channels": in_channels}
    encoder = build_image_encoder(encoder_params["name"], **kwargs)
    if image_init != "random":
        load_encoder_weights(encoder, image_init)
    logger.info("image encoder: %s, init %s", encoder_params["name"], image_init)
    return encoder


def create_clip_model(
    image_encoder: ImageEncoder, text_params: Mapping, clip_params: Mapping
) -> ClipModel:
    text_encoder = TextEncoder(**text_params)
    return ClipModel(image_encoder, text_encoder, **clip_params)


def clip_model_bundle(
    model: ClipModel,
    text_params: Mapping,
    clip_params: Mapping,
    method: Mapping,
    inference: Mapping | None = None,
) -> dict:
    """Configs and weights as plain values and tensors; ``method`` records how it was trained
    (``AlignmentMethod.settings()``: the method's extra heads are not part of the model);
    ``inference`` (plain data: the preprocessing settings, patch size, zero-shot targets)
    travels with them."""
    bundle = {
        "config": {
            "image_encoder": dict(model.image_encoder.build_config),
            "text_encoder": dict(text_params),
            "clip": dict(clip_params),
            "method": dict(method),
        },
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
    }
    if inference is not None:
        bundle["inference"] = dict(inference)
    return bundle


def load_clip_model(bundle: Mapping) -> ClipModel:
    """Rebuild a model saved by :func:`clip_model_bundle`, every tensor restored (strict)."""
    config = bundle["config"]
    encoder_config = dict(config["image_encoder"])
    encoder = build_image_encoder(encoder_config.pop("name"), **encoder_config)
    model = create_clip_model(encoder, config["text_encoder"], config["clip"])
    model.load_state_dict(bundle["state_dict"])
    return model.eval()


@torch.no_grad()
def embed_texts(model: ClipModel, sentences: list[str], batch_size: int = 64) -> torch.Tensor:
    """L2-normalised text embeddings on the CPU, computed in eval mode on the model's device."""
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    for start in range(0, len(sentences), batch_size):
        tokens = model.text_encoder.tokenize(sentences[start : start + batch_size])
        tokens = {name: tensor.to(device) for name, tensor in tokens.items()}
        chunks.append(model.encode_text(**tokens).float().cpu())
    return torch.cat(chunks)
