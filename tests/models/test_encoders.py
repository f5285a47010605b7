"""Image encoder registry: shapes, size checks, stages, paper-size defaults; heads; CLIP model."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from mriclip.models.clip import PAPER_INIT_TEMPERATURE, ClipModel
from mriclip.models.encoders import build_image_encoder, encoder_names
from mriclip.models.heads import build_projection_head

TINY = {
    "swin": {"feature_size": 12, "window_size": 4},
    "mednext": {"init_filters": 4},
    "resnet": {"filters": 4},
}


@pytest.mark.parametrize(
    ("name", "size"),
    [
        ("swin", (32, 32, 32)),
        ("swin", (64, 32, 32)),
        ("mednext", (32, 32, 32)),
        ("mednext", (48, 32, 32)),
        ("resnet", (32, 32, 32)),
        ("resnet", (48, 32, 64)),
    ],
)
def test_output_shapes(name, size):
    encoder = build_image_encoder(name, **TINY[name])
    x = torch.randn(2, 1, *size)
    features = encoder.forward_features(x)
    expected_map = tuple(side // encoder.downsample_factor for side in size)
    assert features.shape == (2, encoder.map_channels, *expected_map)
    assert encoder(x).shape == (2, encoder.feature_dim)


@pytest.mark.parametrize(
    ("name", "shape", "message"),
    [
        ("swin", (1, 1, 48, 48, 48), "multiple of 32"),
        ("mednext", (1, 1, 40, 32, 32), "multiple of 16"),
        ("resnet", (1, 2, 32, 32, 32), r"\(B, 1, D, H, W\)"),
        ("resnet", (1, 32, 32, 32), r"\(B, 1, D, H, W\)"),
        ("resnet", (2, 1, 16, 16, 16), "more than one voxel"),
    ],
)
def test_bad_input_raises_clear_value_error(name, shape, message):
    encoder = build_image_encoder(name, **TINY[name])
    with pytest.raises(ValueError, match=message):
        encoder(torch.zeros(shape))


@pytest.mark.parametrize("name", encoder_names())
def test_stages_cover_every_parameter_in_order(name):
    encoder = build_image_encoder(name, **TINY[name])
    stages = encoder.stages()
    in_stages = [id(p) for stage in stages for p in stage.parameters()]
    assert len(in_stages) == len(set(in_stages))
    assert set(in_stages) == {id(p) for p in encoder.parameters()}
    # Freezing the first stage leaves the rest trainable.
    for param in stages[0].parameters():
        param.requires_grad_(False)
    encoder(torch.randn(1, 1, 32, 32, 64)).sum().backward()
    assert all(p.grad is None for p in stages[0].parameters())
    assert all(p.grad is not None for p in stages[-1].parameters())


@pytest.mark.parametrize(
    ("name", "feature_dim", "downsample_factor"),
    [("swin", 768, 32), ("mednext", 512, 16), ("resnet", 1024, 16)],
)
def test_paper_defaults(name, feature_dim, downsample_factor):
    encoder = build_image_encoder(name)
    assert (encoder.feature_dim, encoder.downsample_factor) == (feature_dim, downsample_factor)
    assert encoder.build_config == {"name": name}


def test_unknown_encoder_and_bad_swin_heads_raise():
    with pytest.raises(ValueError, match="unknown image encoder"):
        build_image_encoder("vit")
    with pytest.raises(ValueError, match="heads"):
        build_image_encoder("swin", feature_size=16)


def test_projection_heads():
    features = torch.randn(4, 10)
    residual = build_projection_head("residual", 10, embed_dim=6, dropout=0.1)
    linear = build_projection_head("linear", 10, embed_dim=6)
    assert residual(features).shape == linear(features).shape == (4, 6)
    assert isinstance(linear, nn.Linear)
    with pytest.raises(ValueError, match="unknown projection head"):
        build_projection_head("mlp", 10)


class _TinyText(nn.Module):
    hidden_size = 3

    def __init__(self):
        super().__init__()
        self.embedding = nn.Embedding(10, 3)

    def forward(self, input_ids, attention_mask):
        return self.embedding(input_ids).mean(dim=1)


def test_clip_model_embeddings_and_temperature():
    image_encoder = build_image_encoder("resnet", filters=2, levels=2, subunits=1)
    model = ClipModel(
        image_encoder, _TinyText(), embed_dim=4, init_temperature=PAPER_INIT_TEMPERATURE
    )
    image_emb, text_emb = model(
        torch.randn(2, 1, 4, 4, 4), torch.tensor([[1, 2], [3, 4]]), torch.ones(2, 2)
    )
    assert torch.allclose(image_emb.norm(dim=1), torch.ones(2))
    assert torch.allclose(text_emb.norm(dim=1), torch.ones(2))
    assert model.log_logit_scale.item() == pytest.approx(math.log(1.351))
    assert model.logit_scale.item() == pytest.approx(1.351)
    assert model.logit_bias is None

    with torch.no_grad():
        model.log_logit_scale.fill_(10.0)
    assert model.logit_scale.item() == pytest.approx(100.0)  # clamped in forward
    model.clamp_logit_scale_()
    assert model.log_logit_scale.item() == pytest.approx(math.log(100.0))

    siglip = ClipModel(image_encoder, _TinyText(), embed_dim=4, loss="siglip")
    assert siglip.logit_scale.item() == pytest.approx(10.0)
    assert siglip.logit_bias.item() == -10.0
    with pytest.raises(ValueError, match="init_temperature"):
        ClipModel(image_encoder, _TinyText(), init_temperature=1.351)


def test_pooling_choices_are_the_deepest_maps_mean_max_or_both():
    x = torch.randn(2, 1, 32, 32, 32)
    for pooling, width in (("mean", 1), ("max", 1), ("mean_max", 2)):
        encoder = build_image_encoder("resnet", filters=4, levels=4, pooling=pooling).eval()
        assert encoder.feature_dim == width * encoder.map_channels
        with torch.no_grad():
            features = encoder.forward_features(x).flatten(2)
            pooled = encoder(x)
        expected = {
            "mean": features.mean(2),
            "max": features.amax(2),
            "mean_max": torch.cat([features.mean(2), features.amax(2)], 1),
        }[pooling]
        torch.testing.assert_close(pooled, expected)
    with pytest.raises(ValueError, match="unknown encoder pooling"):
        build_image_encoder("resnet", pooling="median")


def test_resnet_first_stride_starts_at_half_resolution():
    """first_stride=2: the first unit's 3³ convolution (and its residual path) is strided,
    so every map is half the size of first_stride=1's with one level fewer."""
    torch.manual_seed(0)
    strided = build_image_encoder("resnet", filters=8, levels=3, first_stride=2, subunits=1)
    assert strided.downsample_factor == 8
    first = strided.levels[0]
    assert first.conv.unit0.conv.stride == (2, 2, 2)
    assert first.residual.stride == (2, 2, 2)
    x = torch.randn(2, 1, 16, 16, 32)
    half = first(x)
    assert half.shape == (2, 8, 8, 8, 16)
    assert strided.forward_features(x).shape == (2, 32, 2, 2, 4)
    with pytest.raises(ValueError, match="first_stride must be 1 or 2, got 3"):
        build_image_encoder("resnet", first_stride=3)


def test_resnet_norm_keeps_channels_last_with_the_same_values_and_gradients():
    """The encoder's instance norm returns a channels-last input's layout (else the CPU
    activation backward after it takes a slow path), and computes what plain
    nn.InstanceNorm3d does: outputs and gradients agree to float rounding (the convolutions
    after it may now run in the other layout)."""
    torch.manual_seed(0)
    encoder = build_image_encoder("resnet", filters=4, levels=3, position_channels=True)
    plain = build_image_encoder("resnet", filters=4, levels=3, position_channels=True)
    for module in list(plain.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.InstanceNorm3d):
                swapped = nn.InstanceNorm3d(child.num_features, affine=True)
                swapped.load_state_dict(child.state_dict())
                setattr(module, name, swapped)
    plain.load_state_dict(encoder.state_dict())
    norms = [m for m in encoder.modules() if isinstance(m, nn.InstanceNorm3d)]
    assert norms and all(type(m) is not nn.InstanceNorm3d for m in norms)

    x = torch.randn(2, 4, 16, 16, 16).to(memory_format=torch.channels_last_3d)
    outputs = []
    for model in (encoder, plain):
        model.to(memory_format=torch.channels_last_3d)
        out = model(x)
        out.square().sum().backward()
        outputs.append(out)
    torch.testing.assert_close(outputs[0], outputs[1], rtol=1e-5, atol=1e-5)
    for (name, mine), theirs in zip(encoder.named_parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, rtol=1e-4, atol=1e-5, msg=name)

    level = encoder.levels[0].conv.unit0.adn.N
    y = level(torch.randn(2, 4, 8, 8, 8).to(memory_format=torch.channels_last_3d))
    assert y.is_contiguous(memory_format=torch.channels_last_3d) and not y.is_contiguous()
    assert level(torch.randn(2, 4, 8, 8, 8)).is_contiguous()
