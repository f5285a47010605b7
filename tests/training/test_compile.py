"""``compile: true`` (torch.compile in place): the same training, the same checkpoints.

torch.compile needs a C compiler on the CPU; here a compile of the tiny model takes ~30 s."""

import numpy as np
import pytest
import torch

from mriclip.training.pretraining import PretrainingSamples
from tests.conftest import crashing_in_epoch
from tests.training.test_pretraining import augmented, config, model, train_masked_autoencoder


def test_compiled_training_matches_eager_and_resumes_exactly_with_plain_keys(tmp_path, caplog):
    caplog.set_level("INFO")
    _, eager = train_masked_autoencoder(
        model(), augmented(), None, *config(tmp_path / "eager", steps=4)
    )
    compiled_model, compiled = train_masked_autoencoder(
        model(), augmented(), None, *config(tmp_path / "compiled", steps=4, compile=True)
    )
    assert "pretraining: torch.compile of model" in caplog.text
    # Inductor fuses and reorders float arithmetic: close to eager, not bit-equal. (Weights
    # are not compared: AdamW turns a rounding difference in a near-zero gradient, e.g. a
    # conv bias before a norm, into a full step.)
    np.testing.assert_allclose(compiled["loss"], eager["loss"], rtol=1e-4)
    saved = torch.load(tmp_path / "compiled" / "last.pt", weights_only=True)["model"]
    assert list(saved) == list(model().state_dict())  # no "_orig_mod." prefix
    assert compiled_model._compiled_call_impl is None  # handed back as a plain module

    crashing = augmented(crashing_in_epoch(PretrainingSamples), crash_epoch=1)  # in step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_masked_autoencoder(
            model(), crashing, None, *config(tmp_path / "b", steps=4, compile=True)
        )
    resumed_model, resumed = train_masked_autoencoder(
        model(), augmented(), None, *config(tmp_path / "b", steps=4, compile=True, resume=True)
    )
    assert resumed["step"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed["loss"], compiled["loss"], rtol=1e-6)
    for (name, a), b in zip(
        compiled_model.state_dict().items(), resumed_model.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)
