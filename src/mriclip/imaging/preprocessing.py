"""MRI preprocessing to a fixed grid, composed from MONAI transforms (plus SimpleITK's N4 and
registration).

Per scan: optional N4 bias-field correction; either reorient to RAS+ and resample to a target
spacing, or register to a template head (rigid or affine) and resample onto the template's
grid at that spacing; then crop to the head foreground, resize so the longest side fits, pad
to the target shape, and z-normalise on the foreground after clipping at a percentile. The
label map follows every spatial step with nearest-neighbour interpolation, so lesion ids
survive. The output affine always maps the output grid to the scanner's millimetres.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import (
    Compose,
    CropForegroundd,
    Orientationd,
    Resized,
    ResizeWithPadOrCropd,
    Spacingd,
    SpatialPadd,
)
from scipy import ndimage

from mriclip.imaging import registration

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PreprocessingConfig:
    """``data_engineering.preprocessing`` (documented, with its defaults, in the YAML)."""

    target_spacing: Sequence[float]
    target_shape: Sequence[int]
    fit: str  # resize_longest | pad_or_crop
    foreground_fraction: float
    crop_margin: int
    clip_percentile: float
    n4_bias_correction: bool
    n4_shrink_factor: int
    n4_iterations: Sequence[int]
    registration: str  # none | rigid | affine
    registration_template: str  # registration.PACKAGED_TEMPLATE or a NIfTI path
    registration_spacing_mm: float
    registration_iterations: int

    def __post_init__(self) -> None:
        if self.fit not in ("resize_longest", "pad_or_crop"):
            raise ValueError(
                f"preprocessing.fit must be resize_longest or pad_or_crop, got {self.fit!r}"
            )
        if len(self.target_shape) != 3 or min(self.target_shape) < 8:
            raise ValueError(
                f"preprocessing.target_shape must be 3 sizes >= 8, got {self.target_shape}"
            )
        if len(self.target_spacing) != 3 or min(self.target_spacing) <= 0:
            raise ValueError(
                "preprocessing.target_spacing must be 3 positive numbers, "
                f"got {self.target_spacing}"
            )
        if not 50 <= self.clip_percentile <= 100:
            raise ValueError(
                f"preprocessing.clip_percentile must be in [50, 100], got {self.clip_percentile}"
            )
        if self.registration not in registration.METHODS:
            raise ValueError(
                f"preprocessing.registration must be one of {registration.METHODS}, "
                f"got {self.registration!r}"
            )
        if not self.registration_spacing_mm > 0 or self.registration_iterations < 1:
            raise ValueError(
                "preprocessing.registration_spacing_mm must be > 0 and "
                "registration_iterations >= 1, got "
                f"{self.registration_spacing_mm} and {self.registration_iterations}"
            )


def n4_bias_correction(
    volume: np.ndarray, spacing: Sequence[float], config: PreprocessingConfig
) -> np.ndarray:
    """SimpleITK N4 on a shrunk copy; the estimated field is applied at full resolution."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(
        np.ascontiguousarray(volume.transpose(2, 1, 0), dtype=np.float32)
    )
    image.SetSpacing([float(s) for s in spacing])
    mask = sitk.OtsuThreshold(image, 0, 1, 200)
    shrink = [config.n4_shrink_factor] * 3
    small_image = sitk.Shrink(image, shrink)
    small_mask = sitk.Shrink(mask, shrink)
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in config.n4_iterations])
    corrector.Execute(small_image, small_mask)
    log_field = corrector.GetLogBiasFieldAsImage(image)
    corrected = image / sitk.Exp(log_field)
    return sitk.GetArrayFromImage(corrected).transpose(2, 1, 0)


def head_mask(volume: np.ndarray, foreground_fraction: float) -> np.ndarray:
    """The head: voxels above a fraction of the 99th percentile, opened to drop isolated noise
    voxels, reduced to the largest connected component and hole-filled."""
    positive = volume[volume > 0]
    if positive.size == 0:
        return np.zeros(volume.shape, dtype=bool)
    mask = volume > foreground_fraction * np.percentile(positive, 99)
    mask = ndimage.binary_opening(mask, iterations=1)
    components, n_components = ndimage.label(mask)
    if n_components > 1:
        sizes = ndimage.sum_labels(mask, components, range(1, n_components + 1))
        mask = components == 1 + int(np.argmax(sizes))
    return ndimage.binary_fill_holes(mask)


def _spatial_pipeline(config: PreprocessingConfig, keys: Sequence[str]) -> Compose:
    """The spatial steps for ``keys``; every key follows the crop found on "image"; "label"
    is interpolated nearest-neighbour, anything else (a twin image) like the image."""
    keys = list(keys)
    modes = ["nearest" if key == "label" else "bilinear" for key in keys]
    resize_modes = ["nearest" if key == "label" else "trilinear" for key in keys]

    def is_head(volume: torch.Tensor) -> torch.Tensor:
        mask = head_mask(volume[0].cpu().numpy(), config.foreground_fraction)
        return torch.from_numpy(mask)[None]

    steps = []
    if config.registration == "none":  # else the volumes are on the template grid already
        steps += [
            Orientationd(keys=keys, axcodes="RAS", labels=(("L", "R"), ("P", "A"), ("I", "S"))),
            Spacingd(keys=keys, pixdim=tuple(config.target_spacing), mode=modes),
        ]
    steps.append(
        CropForegroundd(keys=keys, source_key="image", select_fn=is_head, margin=config.crop_margin)
    )
    if config.fit == "resize_longest":
        steps += [
            Resized(
                keys=keys,
                spatial_size=max(config.target_shape),
                size_mode="longest",
                mode=resize_modes,
            ),
            SpatialPadd(keys=keys, spatial_size=tuple(config.target_shape)),
            ResizeWithPadOrCropd(keys=keys, spatial_size=tuple(config.target_shape)),
        ]
    else:
        steps.append(ResizeWithPadOrCropd(keys=keys, spatial_size=tuple(config.target_shape)))
    return Compose(steps)


def z_normalise(volume: np.ndarray, config: PreprocessingConfig) -> tuple[np.ndarray, dict]:
    """Clip at the foreground percentile, then zero mean / unit variance on the foreground.

    Background stays 0 so padding and air look alike to the encoder."""
    foreground = head_mask(volume, config.foreground_fraction)
    if not foreground.any():
        raise ValueError("volume has no foreground after preprocessing (empty or all background)")
    clip_at = np.percentile(volume[foreground], config.clip_percentile)
    clipped = np.minimum(volume, clip_at)
    mean = float(clipped[foreground].mean())
    std = float(clipped[foreground].std()) or 1.0
    normalised = np.where(foreground, (clipped - mean) / std, 0.0).astype(np.float32)
    return normalised, {
        "foreground_fraction": float(foreground.mean()),
        "clip_value": float(clip_at),
        "foreground_mean": mean,
        "foreground_std": std,
    }


def _intensities(data: np.ndarray, spacing, config: PreprocessingConfig) -> np.ndarray:
    volume = data.astype(np.float32)
    volume = volume - min(float(volume.min()), 0.0)  # intensities may be signed; keep air at 0
    if not np.any(volume > 0):
        raise ValueError("volume has no positive voxels (empty or constant image)")
    if config.n4_bias_correction:
        volume = n4_bias_correction(volume, spacing, config)
    return volume


def _spatial(
    image: nib.Nifti1Image,
    volumes: dict[str, np.ndarray],
    config: PreprocessingConfig,
    transform: np.ndarray | None = None,
) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray | None]:
    """The volumes on the output grid, its affine to the scanner's mm, and the registration
    transform (None without registration). With registration, the transform is ``transform``
    or, without one, estimated on "image"; every volume is resampled with it."""
    affine, to_scanner = image.affine, np.eye(4)
    if config.registration != "none":
        to_scanner = transform
        if to_scanner is None:
            to_scanner = registration.estimate_transform(
                volumes["image"],
                image.affine,
                config.registration,
                config.registration_template,
                config.registration_spacing_mm,
                config.registration_iterations,
            )
        shape, affine = registration.template_grid(
            config.registration_template, config.target_spacing
        )
        volumes = {
            key: registration.resample(
                volume, image.affine, to_scanner, shape, affine, nearest=key == "label"
            )
            for key, volume in volumes.items()
        }
    sample = {
        key: MetaTensor(
            torch.from_numpy(volume.astype(np.float32))[None],
            affine=torch.as_tensor(affine, dtype=torch.float64),
        )
        for key, volume in volumes.items()
    }
    out = _spatial_pipeline(config, list(sample))(sample)
    output_affine = to_scanner @ out["image"].affine.numpy()
    registered = None if config.registration == "none" else to_scanner
    return {key: out[key][0].numpy() for key in volumes}, output_affine, registered


def preprocess_scan(
    image: nib.Nifti1Image,
    data: np.ndarray,
    label: np.ndarray | None,
    config: PreprocessingConfig,
    sequences: Sequence[np.ndarray] = (),
) -> tuple[np.ndarray, np.ndarray | None, dict]:
    """Preprocess one validated scan (``data`` is its 3D array, ``label`` its label map or None).

    Returns the float32 volume, the int16 label map (or None) on ``config.target_shape``,
    and a metadata dict for the preprocessing report; its ``output_affine`` (JSON) maps the
    output grid's voxels to the scanner's millimetres, as ``image.affine`` does the input's.
    ``sequences`` are more sequences of the scan on ``data``'s grid: then the volume is the
    channel stack (1 + len(sequences), *target_shape), ``data`` first, every sequence
    following ``data``'s crop and z-normalised on its own (the report's statistics: ``data``'s).
    """
    spacing = nib.affines.voxel_sizes(image.affine)
    volumes = {"image": _intensities(data, spacing, config)}
    for number, sequence in enumerate(sequences, start=1):
        volumes[f"sequence_{number}"] = _intensities(sequence, spacing, config)
    if label is not None:
        volumes["label"] = label
    out, output_affine, transform = _spatial(image, volumes, config)
    normalised, stats = z_normalise(out["image"], config)
    if sequences:
        normalised = np.stack(
            [normalised]
            + [
                z_normalise(out[f"sequence_{number}"], config)[0]
                for number in range(1, len(sequences) + 1)
            ]
        )
    out_label = None if label is None else np.rint(out["label"]).astype(np.int16)
    metadata = {
        "original_shape": "x".join(map(str, data.shape)),
        "original_spacing": "x".join(f"{s:.3g}" for s in spacing),
        "original_orientation": "".join(nib.aff2axcodes(image.affine)),
        "output_shape": "x".join(map(str, normalised.shape[-3:])),
        "output_spacing": "x".join(f"{s:.3g}" for s in nib.affines.voxel_sizes(output_affine)),
        "n4_bias_correction": config.n4_bias_correction,
        "registration": config.registration,
        "output_affine": json.dumps(np.round(output_affine, 6).tolist()),
        # template mm -> scanner mm, exact: the scan's twins are resampled with it
        "registration_transform": None if transform is None else json.dumps(transform.tolist()),
        **stats,
    }
    return normalised, out_label, metadata


def warm_up(config: PreprocessingConfig) -> None:
    """Load once, here, what every scan's preprocessing reads: SimpleITK and the registration
    template at both of its resolutions (cached per process). Processes forked afterwards,
    one per scan under a time limit, inherit them; without this each loaded them again,
    about 1.5 s a scan on 2 busy cores, more than the scan's own work."""
    if config.registration != "none" or config.n4_bias_correction:
        import SimpleITK  # noqa: F401 - imported for the children
    if config.registration != "none":
        template = config.registration_template
        registration._template(template, float(config.registration_spacing_mm))
        registration.template_grid(template, config.target_spacing)


def registration_transform(report: dict) -> np.ndarray | None:
    """The registration transform a :func:`preprocess_scan` report keeps (None: none kept)."""
    kept = report.get("registration_transform")
    return None if not isinstance(kept, str) else np.array(json.loads(kept), dtype=float)


def preprocess_twin(
    image: nib.Nifti1Image,
    data: np.ndarray,
    twin: np.ndarray,
    config: PreprocessingConfig,
    transform: np.ndarray | None = None,
) -> np.ndarray:
    """A twin of a scan on the scan's own output grid: ``twin`` (the same scan rendered
    differently, e.g. without lesions) follows the very crop and resampling that ``data``
    gets, then is z-normalised on its own, as it would be as a scan of its own. With
    registration, ``transform`` is the scan's (:func:`registration_transform` of its
    report), reused rather than estimated again."""
    if twin.shape != data.shape:
        raise ValueError(f"twin shape {twin.shape} differs from the scan's {data.shape}")
    spacing = nib.affines.voxel_sizes(image.affine)
    volumes = {
        "image": _intensities(data, spacing, config),
        "twin": _intensities(twin, spacing, config),
    }
    out, _, _ = _spatial(image, volumes, config, transform)
    return z_normalise(out["twin"], config)[0]


def lesion_geometry(label: np.ndarray) -> dict[int, tuple[tuple[float, float, float], int]]:
    """Centre of mass (voxel coordinates) and voxel count of every lesion id in a label map."""
    ids = [int(i) for i in np.unique(label) if i != 0]
    if not ids:
        return {}
    centres = ndimage.center_of_mass(np.ones_like(label, dtype=np.float32), label, ids)
    counts = ndimage.sum_labels(np.ones_like(label), label, ids)
    return {
        i: (tuple(float(c) for c in centre), int(n))
        for i, centre, n in zip(ids, centres, counts, strict=True)
    }
