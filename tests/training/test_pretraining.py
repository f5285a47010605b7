import numpy as np
import pytest
import torch

from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import MaskedAutoencoder
from mriclip.training.pretraining import (
    PretrainingConfig,
    PretrainingSamples,
    train_masked_autoencoder,
)

ENCODER = {"filters": 4, "levels": 3, "subunits": 1}


class CrashAfter(PretrainingSamples):
    """Raises on the n-th item read: a stand-in for a crash mid-training."""

    def __init__(self, *args, crash_at: int, **kwargs):
        super().__init__(*args, **kwargs)
        self.reads, self.crash_at = 0, crash_at

    def __getitem__(self, index):
        self.reads += 1
        if self.reads == self.crash_at:
            raise RuntimeError("simulated crash")
        return super().__getitem__(index)


def volumes():
    rng = np.random.default_rng(0)
    return {f"S{i}": rng.normal(size=(20, 20, 20)).astype(np.float32) for i in range(4)}


def model():
    torch.manual_seed(0)
    return MaskedAutoencoder(build_image_encoder("resnet", **ENCODER))


def config(tmp_path, **changes):
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
    return PretrainingConfig(**{**base, **changes})


def test_resume_continues_at_the_right_step_and_matches_an_uninterrupted_run(tmp_path):
    ids = sorted(volumes())
    straight_model, straight = train_masked_autoencoder(
        model(), PretrainingSamples(volumes(), ids, 16, seed=1), None, config(tmp_path / "a")
    )

    crashing = CrashAfter(volumes(), ids, 16, seed=1, crash_at=2 * 5 + 1)  # during step 6
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_masked_autoencoder(model(), crashing, None, config(tmp_path / "b"))
    resumed_model, resumed = train_masked_autoencoder(
        model(),
        PretrainingSamples(volumes(), ids, 16, seed=1),
        None,
        config(tmp_path / "b", resume=True),
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
        config(tmp_path, steps=3),
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
