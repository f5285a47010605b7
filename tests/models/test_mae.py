import pytest
import torch

from mriclip.models.encoders import build_image_encoder
from mriclip.models.mae import (
    LightDecoder,
    MaskedAutoencoder,
    apply_mask,
    block_mask,
    reconstruction_loss,
    unmasked_mean_baseline,
)

TINY = {
    "swin": {
        "feature_size": 12,
        "depths": (1, 1, 1, 1),
        "num_heads": (1, 2, 4, 8),
        "window_size": 4,
    },
    "mednext": {"init_filters": 4, "blocks_down": (1, 1, 1, 1), "blocks_bottleneck": 1},
    "resnet": {"filters": 4, "levels": 4, "subunits": 1},
}


@pytest.mark.parametrize("ratio", [0.6, 0.25, 0.9])
def test_mask_ratio_is_exact_and_blocks_are_whole(ratio):
    generator = torch.Generator().manual_seed(0)
    mask = block_mask((16, 24, 32), batch_size=3, block_size=4, ratio=ratio, generator=generator)
    assert mask.shape == (3, 1, 16, 24, 32) and mask.dtype == torch.bool
    n_blocks = 4 * 6 * 8
    blocks = mask.view(3, 1, 4, 4, 6, 4, 8, 4).permute(0, 1, 2, 4, 6, 3, 5, 7)
    blocks = blocks.reshape(3, n_blocks, 64)
    # every 4^3 block is wholly masked or wholly visible ...
    assert bool(((blocks.all(-1)) | (~blocks.any(-1))).all())
    # ... and exactly round(ratio * n_blocks) blocks are masked in every sample
    assert blocks.all(-1).sum(1).tolist() == [round(ratio * n_blocks)] * 3
    assert not torch.equal(mask[0], mask[1])  # samples get their own masks


def test_mask_rejects_bad_geometry():
    with pytest.raises(ValueError, match="not divisible by the mask block size 4"):
        block_mask((16, 18, 16), 1, 4, 0.6)
    with pytest.raises(ValueError, match=r"mask ratio must be in \(0, 1\)"):
        block_mask((16, 16, 16), 1, 4, 1.0)


def test_apply_mask_fills():
    image = torch.ones(1, 1, 8, 8, 8)
    mask = block_mask((8, 8, 8), 1, 4, 0.5, torch.Generator().manual_seed(1))
    zeros = apply_mask(image, mask, "zeros")
    assert zeros[mask].abs().sum() == 0 and bool((zeros[~mask] == 1).all())
    noise = apply_mask(image, mask, "noise", torch.Generator().manual_seed(1))
    assert noise[mask].std() > 0.5
    with pytest.raises(ValueError, match="mask_fill"):
        apply_mask(image, mask, "blur")


@pytest.mark.parametrize("name", sorted(TINY))
def test_decoder_output_has_the_input_shape(name):
    encoder = build_image_encoder(name, **TINY[name])
    side = 2 * encoder.downsample_factor if name != "swin" else encoder.downsample_factor
    model = MaskedAutoencoder(encoder)
    image = torch.randn(2, 1, side, side, side)
    assert model(image).shape == image.shape


def test_losses_against_direct_computation():
    generator = torch.Generator().manual_seed(0)
    target = torch.randn(2, 1, 8, 8, 8, generator=generator)
    prediction = torch.randn(2, 1, 8, 8, 8, generator=generator)
    mask = block_mask((8, 8, 8), 2, 4, 0.5, generator)
    assert reconstruction_loss(prediction, target, mask, False) == pytest.approx(
        float(((prediction - target) ** 2).mean())
    )
    assert reconstruction_loss(prediction, target, mask, True) == pytest.approx(
        float(((prediction - target)[mask] ** 2).mean())
    )
    masked = apply_mask(target, mask)
    # the baseline copies visible voxels and predicts the visible mean for masked ones
    means = [float(target[i][~mask[i]].mean()) for i in range(2)]
    errors = [float(((target[i][mask[i]] - means[i]) ** 2).sum()) for i in range(2)]
    assert unmasked_mean_baseline(target, masked, mask, False) == pytest.approx(
        sum(errors) / target.numel(), rel=1e-5
    )
    assert unmasked_mean_baseline(target, masked, mask, True) == pytest.approx(
        sum(errors) / int(mask.sum()), rel=1e-5
    )


def test_light_decoder_needs_power_of_two():
    with pytest.raises(ValueError, match="not a power of two"):
        LightDecoder(8, 12)


def test_masking_spares_position_channels_and_the_decoder_rebuilds_the_image_only():
    image = torch.randn(2, 4, 8, 8, 8)
    mask = block_mask((8, 8, 8), 2, 4, 0.5, torch.Generator().manual_seed(0))
    for fill in ("zeros", "noise"):
        masked = apply_mask(image, mask, fill, torch.Generator().manual_seed(0), image_channels=1)
        assert torch.equal(masked[:, 1:], image[:, 1:])
        assert torch.equal(masked[:, :1][~mask], image[:, :1][~mask])
        assert not torch.equal(masked[:, :1][mask], image[:, :1][mask])
    encoder = build_image_encoder("resnet", **TINY["resnet"], position_channels=True)
    autoencoder = MaskedAutoencoder(encoder)
    assert autoencoder(torch.randn(2, 4, 16, 16, 16)).shape == (2, 1, 16, 16, 16)
    # The baseline compares image channels only: equal to the one on the image channel alone.
    target = image[:, :1]
    masked = apply_mask(image, mask, "zeros", image_channels=1)
    assert torch.equal(
        unmasked_mean_baseline(target, masked, mask, True),
        unmasked_mean_baseline(target, masked[:, :1], mask, True),
    )
