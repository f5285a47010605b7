"""BrainMVP pretraining: cross-modal masking, modality templates, the contrastive warm-up,
resume, and the encoder's use on a stack of sequences."""

import numpy as np
import pytest
import torch
import yaml

from mriclip.models.brainmvp import BrainMVP, fill_blocks, pick_sequences
from mriclip.models.checkpoints import build_encoder_from_saved, save_encoder
from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import block_mask
from mriclip.training.engine import configs_from_params
from mriclip.training.pretraining import (
    BrainMVPConfig,
    BrainMVPTask,
    PretrainingConfig,
    PretrainingSamples,
    pretrain,
)
from tests.conftest import BASE_CONF, crashing_in_epoch, training_params

ENCODER = {"filters": 4, "levels": 3, "subunits": 1}
PATCH = 16
N_SEQUENCES = 3


def stacks():
    """Four scans of three sequences: each sequence a different contrast of one anatomy."""
    rng = np.random.default_rng(0)
    volumes = {}
    for i in range(4):
        anatomy = rng.normal(size=(20, 20, 20)).astype(np.float32)
        volumes[f"S{i}"] = np.stack([anatomy, -anatomy, anatomy**2]).astype(np.float32)
    return volumes


def brainmvp_config(**changes) -> BrainMVPConfig:
    defaults = yaml.safe_load((BASE_CONF / "parameters_pretraining.yml").read_text())
    settings = {
        **defaults["pretraining"]["brainmvp"],
        "mask_block_size": 4,
        "contrastive_warmup_steps": 2,
        **changes,
    }
    return BrainMVPConfig(batch_size=2, lr=1e-2, masked_only_loss=False, **settings)


def model(position=False) -> BrainMVP:
    torch.manual_seed(0)
    encoder = build_image_encoder("resnet", **ENCODER, position_channels=position)
    return BrainMVP(encoder, N_SEQUENCES, PATCH, projection_dim=8)


def training(tmp_path, **changes):
    base = {"steps": 4, "batch_size": 2, "warmup_steps": 1, "checkpoint_every": 2}
    base |= {"val_every": 2, "checkpoint_dir": str(tmp_path), "device": "cpu", "lr": 1e-2}
    params = training_params("pretraining", **{**base, **changes})
    return configs_from_params(params, PretrainingConfig, 0, "pretraining.training")[0]


def test_seed_defaults_are_the_conf_base_values():
    defaults = yaml.safe_load((BASE_CONF / "parameters_pretraining.yml").read_text())
    settings = defaults["pretraining"]["brainmvp"]
    assert defaults["pretraining"]["method"] == "mae"
    assert (settings["mask_ratio"], settings["mask_block_size"]) == (0.8, 8)
    assert (settings["reconstruction_weight"], settings["contrastive_weight"]) == (10.0, 1.0)


def test_cross_modal_masking_replaces_exactly_the_chosen_blocks_with_the_other_sequence():
    samples = PretrainingSamples(stacks(), ["S0", "S1"], PATCH, seed=3)
    batch = {key: torch.stack([samples[(0, i)][key] for i in range(2)]) for key in samples[0]}
    task = BrainMVPTask(model(), brainmvp_config(mask_ratio=0.5), seed=5, batch_size=2)
    views = task.views(batch, torch.device("cpu"), torch.Generator().manual_seed(9))

    # The same draws, made again by hand: chosen/other sequences, then the two masks.
    generator = torch.Generator().manual_seed(9)
    chosen, other = pick_sequences(2, N_SEQUENCES, generator)
    mask = block_mask((PATCH,) * 3, 2, 4, 0.5, generator)
    assert (chosen != other).all()
    cross = views["cross_modal"]
    assert cross.shape == (2, 1, PATCH, PATCH, PATCH)
    for item in range(2):
        sequence = batch["image"][item, chosen[item]]
        helper = batch["image"][item, other[item]]
        masked = mask[item, 0]
        assert masked.float().mean() == pytest.approx(0.5)
        # Masked voxels: the other sequence's, exactly; the rest: the chosen sequence's.
        assert torch.equal(cross[item, 0][masked], helper[masked])
        assert torch.equal(cross[item, 0][~masked], sequence[~masked])
        assert not torch.equal(helper[masked], sequence[masked])
        # Whole blocks: each 4^3 block is either wholly masked or not at all.
        blocks = masked.reshape(4, 4, 4, 4, 4, 4).permute(0, 2, 4, 1, 3, 5).reshape(64, -1)
        assert bool(((blocks.all(1)) | (~blocks.any(1))).all())
        assert torch.equal(views["target"][item, 0], batch["target"][item, chosen[item]])


def test_template_view_fills_masked_blocks_with_the_chosen_sequences_template():
    net = model()
    with torch.no_grad():
        net.templates.copy_(torch.arange(N_SEQUENCES).float().view(-1, 1, 1, 1, 1) + 10)
    samples = PretrainingSamples(stacks(), ["S0", "S1"], PATCH, seed=3)
    batch = {key: torch.stack([samples[(0, i)][key] for i in range(2)]) for key in samples[0]}
    task = BrainMVPTask(net, brainmvp_config(), seed=5, batch_size=2)
    views = task.views(batch, torch.device("cpu"), torch.Generator().manual_seed(9))
    chosen = pick_sequences(2, N_SEQUENCES, torch.Generator().manual_seed(9))[0]
    for item in range(2):
        masked = views["masks"][1][item, 0]
        filled = views["template"][item, 0][masked]
        assert torch.equal(filled, torch.full_like(filled, 10.0 + float(chosen[item])))


def test_templates_receive_gradient_and_change_in_training(tmp_path):
    net = model()
    before = net.templates.detach().clone()
    task = BrainMVPTask(net, brainmvp_config(), seed=0, batch_size=2)
    samples = PretrainingSamples(stacks(), sorted(stacks()), PATCH, seed=1)
    batch = {key: torch.stack([samples[(0, i)][key] for i in range(2)]) for key in samples[0]}
    task.train_step([batch], torch.device("cpu"), None)
    assert net.templates.grad is not None and net.templates.grad.abs().sum() > 0
    net.zero_grad()
    pretrain(BrainMVPTask, net, samples, None, training(tmp_path), brainmvp_config())
    assert not torch.equal(net.templates.detach(), before)


def test_contrastive_term_joins_after_the_warm_up_and_resume_is_exact(tmp_path):
    samples = PretrainingSamples(stacks(), sorted(stacks()), PATCH, seed=1)
    held_out = PretrainingSamples(stacks(), ["S0", "S1"], PATCH, seed=2)
    config = brainmvp_config()
    straight_model, history = pretrain(
        BrainMVPTask, model(), samples, held_out, training(tmp_path / "a"), config
    )
    assert history["contrastive_loss"].isna().tolist() == [True, True, False, False]
    terms = history["cross_modal_loss"] + history["template_loss"]
    expected = 10.0 * terms + history["contrastive_loss"].fillna(0.0)
    np.testing.assert_allclose(history["loss"], expected, rtol=1e-5)
    assert {"val_reconstruction_loss", "val_template_loss", "val_unmasked_mean_loss"} <= set(
        history.columns
    )

    # Crashes in step 3, after the checkpoint of step 2: the warm-up count must come back.
    crashing = crashing_in_epoch(PretrainingSamples)(
        stacks(), sorted(stacks()), PATCH, seed=1, crash_epoch=1
    )
    with pytest.raises(RuntimeError, match="simulated crash"):
        pretrain(BrainMVPTask, model(), crashing, held_out, training(tmp_path / "b"), config)
    resumed_model, resumed = pretrain(
        BrainMVPTask, model(), samples, held_out, training(tmp_path / "b", resume=True), config
    )
    np.testing.assert_allclose(resumed["loss"], history["loss"], rtol=1e-5)
    for key, value in straight_model.state_dict().items():
        torch.testing.assert_close(resumed_model.state_dict()[key], value)


def test_position_channels_follow_the_chosen_sequence():
    samples = PretrainingSamples(stacks(), ["S0"], PATCH, seed=3, position_channels=True)
    batch = {key: samples[(0, 0)][key][None] for key in ("image", "target")}
    task = BrainMVPTask(model(position=True), brainmvp_config(), seed=5, batch_size=1)
    views = task.views(batch, torch.device("cpu"), torch.Generator().manual_seed(1))
    assert views["cross_modal"].shape[1] == 4
    assert torch.equal(views["cross_modal"][:, 1:], batch["image"][:, N_SEQUENCES:])
    reconstruction, projection = task.model(views["cross_modal"])
    assert reconstruction.shape == (1, 1, PATCH, PATCH, PATCH) and projection.shape == (1, 8)


def test_one_sequence_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="at least two sequences"):
        pick_sequences(2, 1, torch.Generator())


def test_fill_blocks_takes_masked_voxels_only():
    image, fill = torch.zeros(1, 1, 2, 2, 2), torch.ones(1, 1, 2, 2, 2)
    mask = torch.zeros(1, 1, 2, 2, 2, dtype=torch.bool)
    mask[0, 0, 1] = True
    assert fill_blocks(image, mask, fill).sum() == 4


def test_single_sequence_encoder_is_inflated_to_a_stack_alike_for_identical_sequences():
    torch.manual_seed(0)
    # 8 filters: the first unit has a residual projection with 4 input channels as with 7.
    single = build_image_encoder("resnet", filters=8, levels=3, position_channels=True).eval()
    stacked = build_encoder_from_saved(save_encoder(single, single.build_config), 4).eval()
    assert stacked.in_channels == 4 and stacked.input_channels == 7
    image, position = torch.randn(2, 1, 16, 16, 16), torch.randn(2, 3, 16, 16, 16)
    with torch.no_grad():
        expected = single(torch.cat([image, position], 1))
        inflated = stacked(torch.cat([image.expand(-1, 4, -1, -1, -1), position], 1))
    torch.testing.assert_close(inflated, expected, rtol=1e-4, atol=1e-5)


def test_inflation_that_needs_new_layers_is_refused_naming_them():
    single = build_image_encoder("resnet", **ENCODER, position_channels=True)  # 4 -> 4 filters
    with pytest.raises(ValueError, match="levels.0.residual"):
        build_encoder_from_saved(save_encoder(single, single.build_config), 4)
