import numpy as np
import pytest
import torch

from mriclip.imaging.augmentation import (
    AugmentationConfig,
    intensity_augmentation,
    spatial_augmentation,
)
from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import MaskedAutoencoder
from mriclip.training.engine import configs_from_params
from mriclip.training.pretraining import (
    MaskedAutoencoderTask,
    PretrainingConfig,
    PretrainingSamples,
    pretrain,
)
from tests.conftest import crashing_in_epoch, first_batches, training_params


def train_masked_autoencoder(model, train_set, val_set, training, config):
    return pretrain(MaskedAutoencoderTask, model, train_set, val_set, training, config)


ENCODER = {"filters": 4, "levels": 3, "subunits": 1}
AUGMENTATION = AugmentationConfig(rotation_prob=1.0, additive_noise_prob=1.0, gamma_prob=0.5)


def volumes():
    rng = np.random.default_rng(0)
    return {f"S{i}": rng.normal(size=(20, 20, 20)).astype(np.float32) for i in range(4)}


def model():
    torch.manual_seed(0)
    return MaskedAutoencoder(build_image_encoder("resnet", **ENCODER))


def augmented(kind=PretrainingSamples, **options) -> PretrainingSamples:
    spatial = spatial_augmentation(AUGMENTATION, ["input", "target"])
    intensity = intensity_augmentation(AUGMENTATION, ["input"])
    return kind(volumes(), sorted(volumes()), 16, spatial, intensity, seed=1, **options)


def config(tmp_path, **changes):
    """(TrainingConfig, PretrainingConfig): conf/base's with these changes."""
    base = {
        "steps": 6,
        "batch_size": 2,
        "warmup_steps": 1,
        "checkpoint_every": 2,
        "val_every": 3,
        "checkpoint_dir": str(tmp_path),
        "device": "cpu",
        "lr": 1e-2,
    }
    params = training_params("pretraining", **{**base, **changes})
    return configs_from_params(params, PretrainingConfig, 0, "pretraining.training")


@pytest.mark.parametrize("workers", [0, 2])
def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path, workers):
    """An uninterrupted run in this process, and one read by ``workers`` data workers that
    crashes and resumes: the same history and weights."""
    straight_model, straight = train_masked_autoencoder(
        model(), augmented(), None, *config(tmp_path / "a")
    )
    crashing = augmented(crashing_in_epoch(PretrainingSamples), crash_epoch=2)  # in step 5
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_masked_autoencoder(
            model(), crashing, None, *config(tmp_path / "b", num_workers=workers)
        )
    resumed_model, resumed = train_masked_autoencoder(
        model(), augmented(), None, *config(tmp_path / "b", resume=True, num_workers=workers)
    )
    assert resumed["step"].tolist() == list(range(1, 7))
    np.testing.assert_allclose(resumed["loss"], straight["loss"], rtol=1e-6)
    for (name, a), b in zip(
        straight_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_validation_reports_the_unmasked_mean_baseline(tmp_path):
    ids = sorted(volumes())
    _, history = train_masked_autoencoder(
        model(),
        PretrainingSamples(volumes(), ids[:3], 16, seed=1),
        PretrainingSamples(volumes(), ids[3:], 16, seed=2),
        *config(tmp_path, steps=3),
    )
    last = history.iloc[-1]
    assert last["val_unmasked_mean_loss"] > 0 and np.isfinite(last["val_reconstruction_loss"])


def test_pretraining_samples_input_and_target():
    samples = PretrainingSamples(volumes(), ["S0"], 16, seed=0)
    item = samples[0]
    assert item["image"].shape == item["target"].shape == (1, 16, 16, 16)
    torch.testing.assert_close(item["image"], item["target"])  # no augmentation: identical
    with pytest.raises(ValueError, match="no volumes"):
        PretrainingSamples(volumes(), [], 16)


def test_batches_are_the_same_with_0_or_2_workers():
    samples = augmented()

    alone, parallel = first_batches(samples, 0, 6), first_batches(samples, 2, 6)
    for one, other in zip(alone, parallel, strict=True):
        torch.testing.assert_close(one["image"], other["image"], rtol=0, atol=0)
        torch.testing.assert_close(one["target"], other["target"], rtol=0, atol=0)
    # Not the same item over and over: a key's epoch gives another crop and augmentation.
    assert len({float(batch["image"].sum()) for batch in alone}) == len(alone)
