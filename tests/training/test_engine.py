import time

import numpy as np
import pytest
import torch

from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import MaskedAutoencoder
from mriclip.training import engine, runtime
from mriclip.training.alignment import AlignmentConfig
from mriclip.training.batching import batch_loader
from mriclip.training.engine import (
    NonFiniteLossError,
    Task,
    check_finite,
    configs_from_params,
    train,
)
from mriclip.training.pretraining import (
    PretrainingConfig,
    PretrainingSamples,
)
from tests.conftest import training_params
from tests.pipelines.helpers import load_parameters
from tests.training.test_pretraining import train_masked_autoencoder

TASKS = {"alignment": AlignmentConfig, "pretraining": PretrainingConfig}


@pytest.mark.parametrize("env", ["base", "test", "gpu"])
@pytest.mark.parametrize("pipeline", sorted(TASKS))
def test_every_environment_gives_every_setting_once(env, pipeline):
    """The YAML is the one place defaults live: configs have none, so an environment whose
    training parameters lacked a key, or had a stray one, would fail here."""
    params = load_parameters(env)[pipeline]["training"]
    training, task = configs_from_params(params, TASKS[pipeline], 7, f"{pipeline}.training")
    assert training.seed == 7 and training.steps == params["steps"]
    assert training.num_workers == params["num_workers"]
    assert training.compile == (env == "gpu")  # off on the CPU, where compiling costs more


def test_missing_keys_are_named():
    params = load_parameters("test")["pretraining"]["training"]
    params.pop("lr")
    with pytest.raises(ValueError, match=r"pretraining.training: .*missing key\(s\) \['lr'\]"):
        configs_from_params(params, PretrainingConfig, 0, "pretraining.training")


class SlowItems(PretrainingSamples):
    """Items that take ``DELAY`` s each to make: a loader that cannot keep up."""

    DELAY = 0.05

    def __getitem__(self, key):
        time.sleep(self.DELAY)
        return super().__getitem__(key)


def test_history_records_the_time_waited_for_batches(tmp_path, caplog):
    caplog.set_level("INFO")
    volumes = {f"S{i}": np.zeros((16, 16, 16), np.float32) for i in range(4)}
    model = MaskedAutoencoder(build_image_encoder("resnet", filters=4, levels=3, subunits=1))
    params = training_params(  # items made in the training process, which waits for each
        "pretraining",
        steps=3,
        batch_size=2,
        warmup_steps=1,
        checkpoint_dir=None,
        device="cpu",
        num_workers=0,
    )
    slow = SlowItems(volumes, sorted(volumes), 16, seed=0)
    _, history = train_masked_autoencoder(
        model, slow, None, *configs_from_params(params, PretrainingConfig, 0, "p.training")
    )
    step_seconds = 2 / history["samples_per_s"]
    waited = history["data_wait_fraction"] * step_seconds
    assert (waited >= 2 * SlowItems.DELAY).all()  # two items a step, made while it waits
    assert (history["data_wait_fraction"] < 1).all()  # the model's work is the rest
    mean = 100 * history["data_wait_fraction"].iloc[1:].mean()
    assert f"pretraining: waited for data {mean:.1f}% of step time (mean) over steps 2-3" in (
        caplog.text
    )


def short_pretraining(steps: int, **changes):
    """(model, history) of a small masked autoencoder pretrained for ``steps`` on 4 random
    volumes, with conf/base's training parameters and ``changes``."""
    volumes = {f"S{i}": np.random.default_rng(i).random((16, 16, 16), np.float32) for i in range(4)}
    model = MaskedAutoencoder(build_image_encoder("resnet", filters=4, levels=3, subunits=1))
    params = training_params(
        "pretraining", steps=steps, batch_size=2, warmup_steps=1, checkpoint_dir=None,
        device="cpu", num_workers=0, **changes,
    )  # fmt: skip
    items = PretrainingSamples(volumes, sorted(volumes), 16, seed=0)
    return train_masked_autoencoder(
        model, items, None, *configs_from_params(params, PretrainingConfig, 0, "p.training")
    )


@pytest.mark.parametrize("channels_last", [True, False])
def test_channels_last_puts_the_3d_convolutions_in_that_layout(channels_last):
    trained, history = short_pretraining(2, channels_last=channels_last)
    convolutions = [m.weight for m in trained.modules() if isinstance(m, torch.nn.Conv3d)]
    assert len(history) == 2 and np.isfinite(history["loss"]).all()
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert all(w.is_contiguous(memory_format=layout) for w in convolutions)
    assert any(w.is_contiguous() != channels_last for w in convolutions)


class Items(torch.utils.data.Dataset):
    def __len__(self) -> int:
        return 64

    def __getitem__(self, key):
        return {"x": torch.ones(3)}


class EightBatchStep(Task):
    """A step that takes 8 batches at once."""

    name, batch_size, batches_per_step = "eight", 1, 8

    def __init__(self) -> None:
        self.model = torch.nn.Linear(3, 1)

    def settings(self) -> dict:
        return {}

    def param_groups(self) -> dict:
        return {"model": (self.model, 0.1)}

    def train_step(self, batches, device, cast) -> float:
        loss = self.model(torch.cat([batch["x"] for batch in batches])).sum()
        loss.backward()
        return loss.item()

    def validate(self, val_set, device) -> dict:
        return {}


def test_workers_keep_a_whole_step_of_batches_in_flight(monkeypatch):
    """The step takes its 8 batches at once. With the loader's default of 2 batches a worker
    (4 for 2 workers), the workers stopped while the model computed and every step waited for
    4 more (a quarter of step time, measured on this machine)."""
    loaders = []

    def recorded(*args, **kwargs):
        loaders.append(batch_loader(*args, **kwargs))
        return loaders[-1]

    monkeypatch.setattr(engine, "batch_loader", recorded)
    params = training_params(
        "pretraining", steps=2, warmup_steps=1, checkpoint_dir=None, device="cpu", num_workers=2
    )
    training, _ = configs_from_params(params, PretrainingConfig, 0, "p.training")
    history = train(EightBatchStep(), Items(), None, training)
    assert len(history) == 2
    (loader,) = loaders
    assert loader.num_workers == 2 and loader.num_workers * loader.prefetch_factor >= 8


def test_non_finite_loss_names_the_step():
    check_finite(1.0, 3)
    with pytest.raises(NonFiniteLossError, match="loss is nan at step 17"):
        check_finite(float("nan"), 17)


class CastRecordingStep(EightBatchStep):
    """Records the autocast dtype each step is given."""

    def __init__(self) -> None:
        super().__init__()
        self.casts = []

    def train_step(self, batches, device, cast) -> float:
        self.casts.append(cast)
        return super().train_step(batches, device, cast)


@pytest.mark.parametrize("native", [True, False])
@pytest.mark.parametrize("mixed_precision_cpu", [True, False])
def test_mixed_precision_cpu_casts_to_bf16_only_where_the_cpu_has_it(
    monkeypatch, recwarn, native, mixed_precision_cpu
):
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: native)
    params = training_params(
        "pretraining", steps=2, warmup_steps=1, checkpoint_dir=None, device="cpu",
        num_workers=0, mixed_precision=True, mixed_precision_cpu=mixed_precision_cpu,
    )  # fmt: skip
    training, _ = configs_from_params(params, PretrainingConfig, 0, "p.training")
    task = CastRecordingStep()
    train(task, Items(), None, training)
    expected = torch.bfloat16 if mixed_precision_cpu and native else None  # mixed_precision: CUDA
    assert task.casts == [expected, expected]
    warned = [w for w in recwarn if "this CPU has no native bf16" in str(w.message)]
    assert len(warned) == (mixed_precision_cpu and not native)


@pytest.mark.skipif(not runtime.cpu_has_native_bf16(), reason="this CPU has no native bf16")
def test_mixed_precision_cpu_trains_the_encoder_in_bf16():
    histories = {}
    for bf16 in (False, True):
        torch.manual_seed(0)
        trained, histories[bf16] = short_pretraining(3, mixed_precision_cpu=bf16)
        assert all(p.dtype == torch.float32 for p in trained.parameters())  # weights stay fp32
    full, mixed = histories[False]["loss"].to_numpy(), histories[True]["loss"].to_numpy()
    assert np.isfinite(mixed).all()
    # bf16 rounding (8 bits of mantissa) changes the losses, but only in the third digit.
    assert not np.array_equal(full, mixed)
    np.testing.assert_allclose(mixed, full, rtol=0.02)
