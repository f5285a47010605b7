"""A trained model as a folder that needs neither the project nor pickle.

An export holds:

- ``model.safetensors``: every tensor of the ``clip_model`` bundle's ``state_dict``;
- ``config.json``: every other (JSON) entry of the bundle as it is (``config``: encoder,
  text-tower, CLIP and method settings; ``inference``: preprocessing, sequences, patch size,
  targets, classes and prompt templates; and whatever a later mriclip adds, e.g. a
  ``calibration``), plus ``text_transformer`` (the Hugging Face config of the text tower,
  so it is built without downloading anything), ``scoring`` (the evaluation's scan scoring
  and prompt settings), ``versions`` (mriclip, torch, transformers, MONAI, Python) and the
  weights file's SHA-256;
- ``tokenizer/``: the text tokenizer's files (``save_pretrained``);
- ``registration_template.nii.gz`` when the model's volumes were registered to a template
  file of the user's (the packaged ICBM152 comes with nilearn);
- ``MODEL_CARD.md`` (:mod:`mriclip.packaging.model_card`).

Loading reads JSON, the tokenizer's text files and safetensors: nothing is unpickled.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import platform
import tempfile
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from safetensors.torch import load_file, save

from mriclip.imaging.registration import PACKAGED_TEMPLATE

logger = logging.getLogger(__name__)

FORMAT = "mriclip-export"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
TOKENIZER = "tokenizer"
CARD = "MODEL_CARD.md"
TEMPLATE = "registration_template.nii.gz"
#: Entries of config.json that the export adds beside the bundle's own.
EXPORT_KEYS = ("format", "format_version", "text_transformer", "scoring", "versions", "weights")
VERSIONED_PACKAGES = ("mriclip", "torch", "transformers", "monai", "safetensors", "nibabel")


class ExportError(ValueError):
    """The folder is no mriclip export, or the bundle cannot become one; the message says why."""


def package_versions() -> dict[str, str | None]:
    """The versions of the packages inference depends on, and of Python."""
    versions = {}
    for package in VERSIONED_PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {**versions, "python": platform.python_version()}


def bundle_settings(bundle: Mapping) -> dict:
    """Every entry of a ``clip_model`` bundle but its tensors, checked to be JSON data."""
    settings = {key: copy.deepcopy(value) for key, value in bundle.items() if key != "state_dict"}
    for key, value in settings.items():
        if key in EXPORT_KEYS:
            raise ExportError(f"the clip_model bundle's entry {key!r} clashes with the export's")
        try:
            json.dumps(value, allow_nan=False)
        except (TypeError, ValueError) as error:
            raise ExportError(
                f"the clip_model bundle's entry {key!r} is not JSON data ({error}); an export "
                "carries only JSON settings beside the tensors"
            ) from error
    return settings


def export_files(bundle: Mapping, scoring: Mapping, model_card: str) -> dict[str, bytes]:
    """The export's files (relative path -> content) of a ``clip_model`` bundle.

    Args:
        bundle: the alignment pipeline's ``clip_model`` (``config``, ``state_dict``,
            ``inference`` and any further JSON entries).
        scoring: how scans are scored: ``{"scan_scoring": ..., "prompts": ...}`` as in the
            ``evaluation`` parameters.
        model_card: the text of ``MODEL_CARD.md``.

    Returns:
        File name (``tokenizer/`` files included) -> bytes.
    """
    from mriclip.models.factory import load_clip_model

    settings = bundle_settings(bundle)
    model = load_clip_model(bundle)
    tensors = {name: tensor.detach().cpu().contiguous().clone() for name, tensor in
               bundle["state_dict"].items()}  # fmt: skip
    weights = save(tensors, metadata={"format": "pt"})
    files: dict[str, bytes] = {WEIGHTS: weights}
    with tempfile.TemporaryDirectory() as folder:
        model.text_encoder.tokenizer.save_pretrained(folder)
        for path in sorted(Path(folder).iterdir()):
            files[f"{TOKENIZER}/{path.name}"] = path.read_bytes()
    settings["config"]["text_encoder"]["name_or_path"] = TOKENIZER
    preprocessing = settings.get("inference", {}).get("preprocessing", {})
    template = preprocessing.get("registration_template", PACKAGED_TEMPLATE)
    if preprocessing.get("registration", "none") != "none" and template != PACKAGED_TEMPLATE:
        files[TEMPLATE] = Path(template).read_bytes()
        preprocessing["registration_template"] = TEMPLATE
    config = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        **settings,
        "text_transformer": model.text_encoder.model.config.to_dict(),
        "scoring": {
            "scan_scoring": dict(scoring["scan_scoring"]),
            "prompts": dict(scoring["prompts"]),
        },  # fmt: skip
        "versions": package_versions(),
        "weights": {"file": WEIGHTS, "sha256": hashlib.sha256(weights).hexdigest()},
    }
    files[CONFIG] = json.dumps(config, indent=2, allow_nan=False).encode()
    files[CARD] = model_card.encode()
    return files


def read_config(folder: str | Path) -> dict:
    """config.json of an export, with its template path made absolute.

    Raises:
        ExportError: the folder is no mriclip export (of a format this mriclip reads).
    """
    folder = Path(folder)
    path = folder / CONFIG
    if not path.is_file():
        raise ExportError(f"{folder} is not a mriclip export: it has no {CONFIG}")
    config = json.loads(path.read_text())
    if config.get("format") != FORMAT or config.get("format_version") != FORMAT_VERSION:
        raise ExportError(
            f"{path} is not a mriclip export of format {FORMAT} {FORMAT_VERSION} (it says "
            f"{config.get('format')!r} {config.get('format_version')!r})"
        )
    preprocessing = config.get("inference", {}).get("preprocessing", {})
    if preprocessing.get("registration_template") == TEMPLATE:
        preprocessing["registration_template"] = str(folder / TEMPLATE)
    return config


def load_model(folder: str | Path, config: Mapping):
    """The ``ClipModel`` of an export, built from ``config`` and filled from
    ``model.safetensors`` (every tensor, strictly), in eval mode.

    Raises:
        ExportError: the weights file is missing, not safetensors, or not the one config.json
            names (its SHA-256 differs).
    """
    from transformers import AutoConfig

    from mriclip.models.clip import ClipModel
    from mriclip.models.encoders import build_image_encoder
    from mriclip.text.encoder import TextEncoder

    folder = Path(folder)
    weights = folder / config["weights"]["file"]
    if not weights.is_file():
        raise ExportError(f"{folder} has no {config['weights']['file']}")
    data = weights.read_bytes()
    if hashlib.sha256(data).hexdigest() != config["weights"]["sha256"]:
        raise ExportError(
            f"{weights} is not the weights file config.json names (its SHA-256 differs): the "
            "export was changed after it was written"
        )
    try:
        state = load_file(str(weights), device="cpu")
    except Exception as error:
        raise ExportError(f"{weights} is not a safetensors file: {error}") from error
    model_config = config["config"]
    encoder_kwargs = dict(model_config["image_encoder"])
    encoder = build_image_encoder(encoder_kwargs.pop("name"), **encoder_kwargs)
    text = dict(model_config["text_encoder"])
    transformer = AutoConfig.for_model(**config["text_transformer"])
    text_encoder = TextEncoder(**{**text, "name_or_path": folder / TOKENIZER}, config=transformer)
    model = ClipModel(encoder, text_encoder, **model_config["clip"])
    model.load_state_dict(state)
    return model.eval()


def write_files(files: Mapping[str, bytes], folder: Path) -> None:
    """Write an export's files into ``folder``, replacing what an earlier export left there."""
    folder.mkdir(parents=True, exist_ok=True)
    for old in sorted(folder.rglob("*"), reverse=True):
        if old.is_file():
            old.unlink()
        elif old.is_dir():
            old.rmdir()
    for name, content in files.items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    logger.info("exported the model to %s (%d files)", folder, len(files))
