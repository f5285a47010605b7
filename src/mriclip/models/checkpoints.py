"""Loading encoder weights from our own files, Lightning checkpoints and other state dicts, and
the saved-encoder convention that lets pretraining hand an encoder to alignment.

Files are read safely: ``.safetensors`` with safetensors, anything else with
``torch.load(weights_only=True)``, which refuses arbitrary pickled objects.

A saved encoder is ``{"config": {"name": <registry name>, **build kwargs}, "state_dict": ...}``
(:func:`save_encoder`); :func:`build_encoder_from_saved` rebuilds it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file as load_safetensors
from torch import nn

from mriclip.models.encoders import ImageEncoder, build_image_encoder

__all__ = [
    "LoadReport",
    "build_encoder_from_saved",
    "load_encoder_weights",
    "read_state_dict",
    "save_encoder",
]

logger = logging.getLogger(__name__)

# Wrappers commonly found around an encoder's names: Lightning modules (model.), torch.compile
# (_orig_mod.), DDP (module.), and models that hold the encoder as an attribute.
KNOWN_PREFIXES = ("model.", "_orig_mod.", "module.", "encoder.", "model.encoder.", "backbone.")
# State-dict containers inside checkpoint files: Lightning / ours, MONAI SSL weights, DDP dumps.
STATE_DICT_KEYS = ("state_dict", "model", "module")
# Prefix candidates also come from the checkpoint's own names, up to this many dotted levels.
MAX_PREFIX_DEPTH = 3

StateDict = Mapping[str, torch.Tensor]


@dataclass
class LoadReport:
    """What a weight load did. Names are the encoder's own parameter/buffer names."""

    source: str
    stripped_prefix: str
    added_prefix: str
    matched: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    shape_mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=list
    )

    @property
    def matched_fraction(self) -> float:
        total = len(self.matched) + len(self.missing) + len(self.shape_mismatched)
        return len(self.matched) / total if total else 0.0

    def summary(self) -> str:
        renaming = ""
        if self.stripped_prefix or self.added_prefix:
            renaming = f" (renamed {self.stripped_prefix or '<none>'!r} -> "
            renaming += f"{self.added_prefix or '<none>'!r})"
        return (
            f"{self.source}{renaming}: {len(self.matched)} tensors loaded "
            f"({self.matched_fraction:.0%} of the encoder), {len(self.missing)} missing, "
            f"{len(self.unexpected)} unexpected, {len(self.shape_mismatched)} shape-mismatched"
        )


def read_state_dict(source: str | Path | Mapping) -> dict[str, torch.Tensor]:
    """The tensors of a file or in-memory checkpoint, unwrapped from ``state_dict``-like keys."""
    if isinstance(source, Mapping):
        checkpoint = source
    else:
        path = Path(source)
        if path.suffix == ".safetensors":
            checkpoint = load_safetensors(str(path), device="cpu")
        else:
            try:
                checkpoint = torch.load(path, map_location="cpu", weights_only=True)
            except Exception as error:
                if not path.exists():
                    raise
                raise ValueError(
                    f"{path} could not be read with torch.load(weights_only=True); it may hold "
                    "arbitrary Python objects, which we do not unpickle. Re-save only its "
                    "state_dict (or use .safetensors)."
                ) from error
    while not all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
        inner = next(
            (
                checkpoint[key]
                for key in STATE_DICT_KEYS
                if isinstance(checkpoint.get(key), Mapping)
            ),
            None,
        )
        if inner is None:
            return {k: v for k, v in checkpoint.items() if isinstance(v, torch.Tensor)}
        checkpoint = inner
    return dict(checkpoint)


def load_encoder_weights(
    encoder: nn.Module,
    path_or_state_dict: str | Path | Mapping,
    strict_fraction: float = 0.9,
) -> LoadReport:
    """Copy matching tensors from a checkpoint into ``encoder`` and report what happened.

    Accepts a ``.pt``/``.pth``/``.ckpt``/``.safetensors`` path, a saved encoder
    (:func:`save_encoder`), a Lightning checkpoint (its ``state_dict``) or a plain state dict.
    Names are matched after the renaming that matches most tensors: stripping a wrapper prefix
    such as ``model.``, ``_orig_mod.``, ``encoder.``, ``model.encoder.`` (or one found in the
    checkpoint) and/or adding one of the encoder's top-level module names; no renaming wins
    ties. Tensors whose shapes differ are skipped and reported.

    Raises ValueError if nothing matches (naming the source), or if fewer than
    ``strict_fraction`` of the encoder's tensors were loaded (0 accepts any partial load).
    """
    source = "<state dict>" if isinstance(path_or_state_dict, Mapping) else str(path_or_state_dict)
    checkpoint = read_state_dict(path_or_state_dict)
    target = encoder.state_dict()
    stripped, added = _best_renaming(checkpoint, target)
    renamed = {
        added + name[len(stripped) :]: tensor
        for name, tensor in checkpoint.items()
        if name.startswith(stripped)
    }
    report = LoadReport(source=source, stripped_prefix=stripped, added_prefix=added)
    loadable = {}
    for name, tensor in target.items():
        if name not in renamed:
            report.missing.append(name)
        elif renamed[name].shape != tensor.shape:
            report.shape_mismatched.append((name, tuple(renamed[name].shape), tuple(tensor.shape)))
        else:
            loadable[name] = renamed[name]
            report.matched.append(name)
    report.unexpected = [name for name in renamed if name not in target]
    report.unexpected += [name for name in checkpoint if not name.startswith(stripped)]
    if not report.matched:
        raise ValueError(
            f"no tensor of {source} matches the {type(encoder).__name__} "
            f"(checkpoint names look like {list(checkpoint)[:3]}, encoder names like "
            f"{list(target)[:3]}); is it a checkpoint of this architecture?"
        )
    encoder.load_state_dict(loadable, strict=False)
    logger.info("loaded encoder weights from %s", report.summary())
    if report.missing or report.shape_mismatched:
        logger.warning(
            "not loaded from %s (kept their current values): missing %s; shape-mismatched %s",
            source,
            report.missing[:10],
            report.shape_mismatched[:10],
        )
    if report.matched_fraction < strict_fraction:
        raise ValueError(
            f"only {report.matched_fraction:.0%} of the encoder's tensors could be loaded from "
            f"{source}, below strict_fraction={strict_fraction}: {report.summary()}"
        )
    return report


def _best_renaming(checkpoint: StateDict, target: StateDict) -> tuple[str, str]:
    """The (prefix to strip, prefix to add) under which most checkpoint names hit the target."""
    strip_candidates = {"", *KNOWN_PREFIXES}
    for name in checkpoint:
        parts = name.split(".")[:-1]
        for depth in range(1, min(len(parts), MAX_PREFIX_DEPTH) + 1):
            strip_candidates.add(".".join(parts[:depth]) + ".")
    add_candidates = {""} | {name.split(".")[0] + "." for name in target if "." in name}
    target_names = set(target)

    def hits(renaming: tuple[str, str]) -> int:
        stripped, added = renaming
        return sum(
            added + name[len(stripped) :] in target_names
            for name in checkpoint
            if name.startswith(stripped)
        )

    # Sorting makes ties deterministic and, via len, prefers the smallest renaming.
    candidates = sorted(
        ((s, a) for s in strip_candidates for a in add_candidates),
        key=lambda pair: (len(pair[0]) + len(pair[1]), pair),
    )
    return max(candidates, key=hits)


def save_encoder(encoder: nn.Module, config: Mapping | None = None) -> dict:
    """``{"config": config, "state_dict": cpu tensors}``; ``config`` holds the registry ``name``
    and build kwargs (plain values), defaulting to what :func:`build_image_encoder` recorded."""
    config = dict(config if config is not None else getattr(encoder, "build_config", {}))
    if "name" not in config:
        raise ValueError(
            "save_encoder needs config with the registry 'name' and build kwargs, e.g. "
            "{'name': 'swin', 'feature_size': 48}"
        )
    state_dict = {name: tensor.detach().cpu() for name, tensor in encoder.state_dict().items()}
    return {"config": config, "state_dict": state_dict}


def build_encoder_from_saved(
    obj: Mapping | str | Path, in_channels: int | None = None
) -> ImageEncoder:
    """Rebuild an encoder saved by :func:`save_encoder` (the dict, or a file holding it).

    With ``in_channels`` other than the saved encoder's (a single-sequence encoder, e.g. from
    BrainMVP pretraining, for a stack of sequences), the input layer is inflated: each new
    image channel gets the saved image channels' summed kernel divided by ``in_channels``, so
    a stack of identical sequences gives the saved encoder's response; position channels
    keep their kernels."""
    if isinstance(obj, Mapping):
        saved, source = obj, "the object"
    else:
        saved, source = torch.load(obj, map_location="cpu", weights_only=True), str(obj)
    if "config" not in saved or "state_dict" not in saved:
        raise ValueError(f"{source} is not a saved encoder (expected 'config' and 'state_dict')")
    config = dict(saved["config"])
    name = config.pop("name")
    state = saved["state_dict"]
    saved_channels = config.get("in_channels", 1)
    if in_channels is not None and in_channels != saved_channels:
        encoder = build_image_encoder(name, **{**config, "in_channels": in_channels})
        state = _inflated_input(state, encoder.state_dict(), saved_channels, in_channels)
    else:
        encoder = build_image_encoder(name, **config)
    encoder.load_state_dict(state)
    return encoder


def _inflated_input(
    saved: StateDict, target: StateDict, saved_channels: int, in_channels: int
) -> StateDict:
    """``saved`` with the input kernels (those whose input axis differs from ``target``'s by
    the change of image channels) inflated as :func:`build_encoder_from_saved` says."""
    new_layers = sorted(set(target) - set(saved))
    if new_layers:  # e.g. a residual projection that an equal channel count did not need
        raise ValueError(
            f"the saved encoder cannot take {in_channels} image channels: that needs layers "
            f"it lacks ({new_layers}); pretrain on the stack (pretraining.method: mae) or "
            "use alignment.image_init: random"
        )
    inflated = dict(saved)
    for key, weight in saved.items():
        wanted = target[key].shape
        if weight.shape == wanted:
            continue
        if weight.ndim < 2 or wanted[1] - weight.shape[1] != in_channels - saved_channels:
            raise ValueError(
                f"saved encoder weight {key} {tuple(weight.shape)} cannot become "
                f"{tuple(wanted)}: only the input layer changes with in_channels"
            )
        image = weight[:, :saved_channels].sum(dim=1, keepdim=True) / in_channels
        repeated = image.expand(-1, in_channels, *weight.shape[2:])
        inflated[key] = torch.cat([repeated, weight[:, saved_channels:]], dim=1)
    return inflated
