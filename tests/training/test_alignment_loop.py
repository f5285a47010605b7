import numpy as np
import pandas as pd
import pytest
import torch
from transformers import BertConfig

from mriclip.imaging.augmentation import AugmentationConfig, full_augmentation
from mriclip.models.clip import ClipModel
from mriclip.models.encoders import build_image_encoder
from mriclip.text.encoder import TextEncoder
from mriclip.text.templates import SentenceTemplates
from mriclip.training.alignment import AlignmentConfig, train_alignment
from mriclip.training.engine import NonFiniteLossError, configs_from_params
from mriclip.training.samples import AlignmentSamples
from tests.conftest import alignment_method, crashing_in_epoch, training_params

REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]


def tiny_model() -> ClipModel:
    torch.manual_seed(0)
    image_encoder = build_image_encoder("resnet", filters=4, levels=3, subunits=1)
    text = TextEncoder(
        max_length=24,
        config=BertConfig(
            vocab_size=30522,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            max_position_embeddings=32,
        ),
    )
    return ClipModel(image_encoder, text, embed_dim=8)


def samples(seed: int = 0, n: int = 8, kind=AlignmentSamples, **extra) -> AlignmentSamples:
    rng = np.random.default_rng(0)
    scans = pd.DataFrame(
        {
            "scan_id": [f"S{i}" for i in range(n)],
            "age": 50,
            "sex": "male",
            "regions": [REGIONS[i % 5] for i in range(n)],
        }
    )
    volumes = {sid: rng.normal(size=(16, 16, 16)).astype(np.float32) for sid in scans["scan_id"]}
    empty = pd.DataFrame(columns=["scan_id", "region"])
    return kind(scans, volumes, empty, SentenceTemplates(), mode="volume", seed=seed, **extra)


def config(folder, method: str = "clip", **changes):
    """(TrainingConfig, AlignmentConfig, AlignmentMethod): conf/base's with these changes."""
    base = {
        "steps": 4,
        "micro_batch_size": 2,
        "accumulation_steps": 2,
        "warmup_steps": 1,
        "val_every": 2,
        "checkpoint_every": 2,
        "checkpoint_dir": str(folder),
        "device": "cpu",
        "lr_vision": 1e-2,
        "lr_text": 1e-3,
        "lr_heads": 1e-2,
    }
    params = training_params("alignment", **{**base, **changes})
    training, task = configs_from_params(params, AlignmentConfig, 0, "alignment.training")
    return training, task, alignment_method(method)


def augmentation():
    noisy = AugmentationConfig(additive_noise_prob=1.0, rotation_prob=1.0, gamma_prob=0.5)
    return full_augmentation(noisy, ["image"], seed=3)


@pytest.mark.parametrize(("augmented", "workers"), [(False, 0), (True, 0), (True, 2)])
def test_resume_restores_optimizer_scheduler_data_and_rng(tmp_path, augmented, workers):
    """An uninterrupted run in this process, and one read by ``workers`` data workers that
    crashes and resumes: the same history and weights."""

    def data(**extra):
        return samples(augment=augmentation() if augmented else None, **extra)

    straight, history = train_alignment(tiny_model(), data(), None, *config(tmp_path / "a"))
    crashing = data(kind=crashing_in_epoch(AlignmentSamples), crash_epoch=1)  # in step 3
    with pytest.raises(RuntimeError, match="simulated crash"):
        train_alignment(tiny_model(), crashing, None, *config(tmp_path / "b", num_workers=workers))
    with pytest.raises(ValueError, match=r"other settings \(\['lr_vision'\]\)"):
        train_alignment(
            tiny_model(), data(), None, *config(tmp_path / "b", resume=True, lr_vision=0.5)
        )
    resumed, resumed_history = train_alignment(
        tiny_model(), data(), None, *config(tmp_path / "b", resume=True, num_workers=workers)
    )
    assert resumed_history["step"].tolist() == [1, 2, 3, 4]
    np.testing.assert_allclose(resumed_history["loss"], history["loss"], rtol=1e-6)
    for (name, a), b in zip(
        straight.state_dict().items(), resumed.state_dict().values(), strict=True
    ):
        torch.testing.assert_close(a, b, msg=name)


def test_checkpoints_leave_out_the_locked_tower_and_a_resume_checks_it(tmp_path):
    """The locked text tower is not written (it stays as built); a resume whose model was
    built with other locked weights is refused, as other settings are."""
    model = tiny_model()
    train_alignment(model, samples(), None, *config(tmp_path))
    saved = torch.load(tmp_path / "last.pt", weights_only=True)["model"]
    assert len(model.text_encoder.state_dict()) > 0
    assert not [key for key in saved if key.startswith("clip.text_encoder.")]
    assert any(key.startswith("clip.image_encoder.") for key in saved)
    assert any(key.startswith("clip.text_head.") for key in saved)  # learnt, so kept

    other = tiny_model()
    with torch.no_grad():
        other.text_encoder.model.embeddings.word_embeddings.weight.add_(1.0)
    with pytest.raises(ValueError, match=r"other settings \(\['locked_state'\]\)"):
        train_alignment(other, samples(), None, *config(tmp_path, resume=True))


def test_validation_rows_and_best_model_is_kept(tmp_path):
    model, history = train_alignment(
        tiny_model(),
        samples(),
        samples(seed=5),
        *config(tmp_path),
        validate=lambda m: {"dummy": 1.0},
    )
    validated = history.dropna(subset=["val_loss"])
    assert validated["step"].tolist() == [2, 4]
    assert (validated["val_dummy"] == 1.0).all()
    best = torch.load(tmp_path / "best.pt", weights_only=True)
    assert best["val_loss"] == pytest.approx(validated["val_loss"].min())
    for name, tensor in model.state_dict().items():
        if name.startswith("text_encoder."):  # locked (freeze_text_stages: all): left out
            assert f"clip.{name}" not in best["model"]
        else:
            torch.testing.assert_close(tensor, best["model"][f"clip.{name}"], msg=name)
    assert history["lr_vision"].iloc[0] == pytest.approx(1e-2)  # warm-up of 1 step
    assert (history["temperature"] > 0).all()


def test_a_micro_batch_larger_than_the_cohort_trains_on_several_patches_a_scan(tmp_path, caplog):
    """Three training scans, micro-batches of eight: each batch draws every scan more than
    once (the log says so), and each draw is another item."""
    seen = []

    class Recording(AlignmentSamples):
        def __getitem__(self, key):
            seen.append(key)
            return super().__getitem__(key)

    data = samples(n=3, kind=Recording, augment=augmentation())
    with caplog.at_level("INFO", logger="mriclip.training.engine"):
        _, history = train_alignment(
            tiny_model(),
            data,
            None,
            # items read in this process, where `seen` records them
            *config(tmp_path, micro_batch_size=8, accumulation_steps=1, num_workers=0),
        )
    assert history["step"].tolist() == [1, 2, 3, 4] and np.isfinite(history["loss"]).all()
    assert "a batch of 8 items exceeds the 3 training scans: each epoch draws every scan 3 " in (
        caplog.text
    )
    first = seen[:8]
    assert len(set(first)) == 8 and {key[1] for key in first} == {0, 1, 2}
    images = [data[key]["image"] for key in first if key[1] == 0]
    assert len(images) >= 2 and not torch.equal(images[0], images[1])  # another draw


def test_non_finite_loss_stops_naming_the_step(tmp_path):
    model = tiny_model()
    model.contrastive_loss = lambda image, text, mask=None: (image * float("nan")).sum()
    with pytest.raises(NonFiniteLossError, match="at step 1"):
        train_alignment(model, samples(), None, *config(tmp_path))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("steps", 0, "alignment.training.steps must be >= 1"),
        ("micro_batch_size", 0, "alignment.training.micro_batch_size must be >= 1"),
        ("num_workers", -1, "alignment.training.num_workers must be >= 0"),
        ("warmup_steps", 5, r"alignment.training.warmup_steps must be in \[0, steps = 4\]"),
        ("positive_key", "labels", "alignment.training.positive_key must be"),
        ("keep", "first", "alignment.training.keep must be"),
        ("lr_visoin", 1e-3, r"unknown key\(s\) \['lr_visoin'\]"),
    ],
)
def test_bad_parameters(tmp_path, field, value, message):
    with pytest.raises(ValueError, match=message):
        config(tmp_path, **{field: value})


def test_a_checkpoint_of_the_former_loops_is_refused_with_a_clear_message(tmp_path):
    """A last.pt written before the engine (it had "config" and "stream", no "settings" or
    "task") names what it lacks instead of failing with a KeyError."""
    folder = tmp_path / "old"
    folder.mkdir()
    torch.save({"step": 2, "config": {}, "stream": {}, "model": {}}, folder / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt is no checkpoint of this training engine"):
        train_alignment(tiny_model(), samples(), None, *config(folder, resume=True))
