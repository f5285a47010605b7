"""Augmentation: transforms at probability 0 are left out (they cost time, change nothing)."""

import numpy as np
import pytest
import torch

from mriclip.imaging.augmentation import AugmentationConfig, full_augmentation

OFF = {name: 0.0 for name in vars(AugmentationConfig()) if name.endswith("_prob")}


def test_only_transforms_that_can_fire_are_composed():
    config = AugmentationConfig(**{**OFF, "gamma_prob": 1.0, "rotation_prob": 0.5})
    spatial, intensity = full_augmentation(config, ["image"], seed=0).transforms
    assert [type(t).__name__ for t in spatial.transforms] == ["RandAffined"]
    assert [type(t).__name__ for t in intensity.transforms] == ["RandAdjustContrastd"]
    assert config.active and not AugmentationConfig(**OFF).active


def test_gamma_at_probability_one_changes_the_image_and_is_seeded():
    config = AugmentationConfig(**{**OFF, "gamma_prob": 1.0})
    image = torch.rand(1, 8, 8, 8) + 0.1
    first = full_augmentation(config, ["image"], seed=3)({"image": image.clone()})["image"]
    again = full_augmentation(config, ["image"], seed=3)({"image": image.clone()})["image"]
    assert not torch.allclose(torch.as_tensor(first), image)
    np.testing.assert_array_equal(np.asarray(first), np.asarray(again))


def test_a_probability_outside_zero_one_is_refused():
    with pytest.raises(ValueError, match="augmentation.blur_prob"):
        AugmentationConfig(blur_prob=1.5)
