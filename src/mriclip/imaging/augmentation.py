"""The paper's augmentations as MONAI transforms, split into spatial and intensity parts.

Alignment applies both to the image. AMAES-style pretraining ("fullaug") applies the spatial
part to input and target alike and the intensity part to the input only, so the model also
learns to undo intensity corruption. Motion ghosting has no MONAI equivalent and is left out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from monai.transforms import (
    Compose,
    Rand3DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasFieldd,
    RandGaussianNoised,
    RandGaussianSmoothd,
    RandGibbsNoised,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
)


@dataclass(frozen=True)
class AugmentationConfig:
    """Probabilities and ranges; a probability of 0 switches a transform off.

    Every probability is 0 unless given: the YAML of each pipeline that augments
    (``pretraining.augmentation``, ``alignment.augmentation``, ``alignment.slip.augmentation``)
    holds the ones it uses, so none fires unseen. The ranges are AMAES's.
    """

    elastic_prob: float = 0.0
    elastic_sigma: Sequence[float] = (5.0, 8.0)
    elastic_magnitude: Sequence[float] = (20.0, 60.0)
    rotation_prob: float = 0.0
    rotation_degrees: float = 30.0
    scale_prob: float = 0.0
    scale_range: Sequence[float] = (0.9, 1.1)
    additive_noise_prob: float = 0.0
    additive_noise_std: float = 0.1
    multiplicative_noise_prob: float = 0.0
    multiplicative_range: Sequence[float] = (0.9, 1.1)
    shift_prob: float = 0.0
    shift_offset: float = 0.1
    blur_prob: float = 0.0
    blur_sigma: Sequence[float] = (0.5, 1.0)
    gibbs_prob: float = 0.0
    gibbs_alpha: Sequence[float] = (0.0, 0.5)
    low_resolution_prob: float = 0.0
    low_resolution_zoom: Sequence[float] = (0.5, 1.0)
    bias_field_prob: float = 0.0
    bias_field_coeff: Sequence[float] = (0.0, 0.1)
    gamma_prob: float = 0.0
    gamma_range: Sequence[float] = (0.5, 2.0)

    def __post_init__(self) -> None:
        for name, value in vars(self).items():
            if name.endswith("_prob") and not 0.0 <= value <= 1.0:
                raise ValueError(f"augmentation.{name} must be in [0, 1], got {value}")

    @property
    def active(self) -> bool:
        """Whether any transform can fire."""
        return any(value > 0 for name, value in vars(self).items() if name.endswith("_prob"))


def _active(transforms: list) -> Compose:
    """Only the transforms that can fire: one at probability 0 changes nothing but still costs
    MONAI's per-call overhead, which on 16^3 cubes was most of a training step."""
    return Compose([transform for transform in transforms if transform.prob > 0])


def spatial_augmentation(config: AugmentationConfig, keys: Sequence[str]) -> Compose:
    """Elastic deformation, rotation and scaling; every key gets the same random draw."""
    keys = list(keys)
    angle = math.radians(config.rotation_degrees)
    scale = (config.scale_range[0] - 1.0, config.scale_range[1] - 1.0)
    return _active(
        [
            RandAffined(keys, prob=config.rotation_prob, rotate_range=(angle,) * 3,
                        padding_mode="zeros"),
            RandAffined(keys, prob=config.scale_prob, scale_range=(scale,) * 3,
                        padding_mode="zeros"),
            Rand3DElasticd(keys, sigma_range=tuple(config.elastic_sigma),
                           magnitude_range=tuple(config.elastic_magnitude),
                           prob=config.elastic_prob, padding_mode="zeros"),
        ]
    )  # fmt: skip


def intensity_augmentation(config: AugmentationConfig, keys: Sequence[str]) -> Compose:
    """Noise, blur, Gibbs ringing, low resolution, bias field and gamma."""
    keys = list(keys)
    return _active(
        [
            RandBiasFieldd(keys, prob=config.bias_field_prob,
                           coeff_range=tuple(config.bias_field_coeff)),
            RandAdjustContrastd(keys, prob=config.gamma_prob, gamma=tuple(config.gamma_range)),
            RandSimulateLowResolutiond(keys, prob=config.low_resolution_prob,
                                       zoom_range=tuple(config.low_resolution_zoom)),
            RandGibbsNoised(keys, prob=config.gibbs_prob, alpha=tuple(config.gibbs_alpha)),
            RandGaussianSmoothd(keys, prob=config.blur_prob,
                                sigma_x=tuple(config.blur_sigma), sigma_y=tuple(config.blur_sigma),
                                sigma_z=tuple(config.blur_sigma)),
            RandScaleIntensityd(keys, prob=config.multiplicative_noise_prob,
                                factors=(config.multiplicative_range[0] - 1.0,
                                         config.multiplicative_range[1] - 1.0)),
            RandShiftIntensityd(keys, prob=config.shift_prob, offsets=config.shift_offset),
            RandGaussianNoised(keys, prob=config.additive_noise_prob,
                               std=config.additive_noise_std),
        ]
    )  # fmt: skip


def full_augmentation(config: AugmentationConfig, keys: Sequence[str], seed: int) -> Compose:
    """Spatial then intensity augmentation, seeded."""
    return Compose([spatial_augmentation(config, keys), intensity_augmentation(config, keys)]
                   ).set_random_state(seed)  # fmt: skip
