"""3D image encoders for single-channel MRI patches, composed from MONAI building blocks.

Every encoder shares one interface (:class:`ImageEncoder`):

- ``forward_features(x)``: ``(B, in_channels, D, H, W)`` -> ``(B, map_channels, d, h, w)``, the
  deepest feature map, with ``d = D / downsample_factor`` (same for ``h``, ``w``);
- ``forward(x)``: ``(B, in_channels, D, H, W)`` -> ``(B, feature_dim)``, that map pooled
  (``pooling``: mean, max, or both concatenated);
- ``map_channels``, ``feature_dim`` and ``downsample_factor`` attributes;
- ``stages()``: the encoder's stages from input to output, for freezing the first ``k`` of them;
- ``lock()``: freeze it whole and keep it in eval mode (LiT);
- ``position_channels``: whether the input carries, after its ``in_channels`` image channels,
  three channels with each voxel's grid coordinates (``input_channels`` counts both).

Input size constraint: each spatial side must be a positive multiple of ``downsample_factor``
(32 for ``swin``, 16 for ``mednext`` and ``resnet`` with their default depths), so 32³, 64³ and
128³ patches suit all three and 48³ suits ``mednext`` and ``resnet``. Anything else raises
``ValueError`` rather than being silently padded or cropped by the network.

Registry names and their defaults (the paper's encoders):

- ``swin``: MONAI's SwinUNETR ``SwinTransformer`` (embed 48, depths 2-2-2-2, heads 3-6-12-24,
  window 7, patch 2), stage-4 output 768 channels, layer-normed as SwinUNETR does;
- ``mednext``: MedNeXt-S encoder (32 filters, kernel 3, expansion 2, blocks 2-2-2-2 plus a
  2-block bottleneck), bottleneck 512 channels; module names follow ``monai.networks.nets.MedNeXt``
  so weights of a full MONAI MedNeXt load into it;
- ``resnet``: a residual UNet encoder (64 filters doubling over 5 stages to 1024, instance norm).

Tiny CPU-friendly variants come from the same keywords, e.g.
``build_image_encoder("swin", feature_size=12, window_size=4)`` (a window of 7 on 32³ inputs
pads 16³ tokens to 21³ and is ~10x slower), ``build_image_encoder("mednext",
init_filters=8)``, ``build_image_encoder("resnet", filters=8)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import ResidualUnit
from monai.networks.blocks.mednext_block import MedNeXtBlock, MedNeXtDownBlock
from monai.networks.layers.factories import Norm
from monai.networks.nets.swin_unetr import SwinTransformer
from torch import nn

__all__ = [
    "ImageEncoder",
    "MedNeXtEncoder",
    "ResNetEncoder",
    "SwinEncoder",
    "build_image_encoder",
    "encoder_names",
]

SPATIAL_DIMS = 3
#: How the deepest map becomes a vector: its mean (the paper's average pooling), its max (a
#: small lesion is one strong local response, which a mean over the map dilutes), or both.
POOLINGS = ("mean", "max", "mean_max")
POSITION_CHANNELS = 3
#: MONAI norm name of :class:`LayoutKeepingInstanceNorm3d`; the encoders' "instance" means it.
INSTANCE_NORM = "instance_keep_layout"


class LayoutKeepingInstanceNorm3d(nn.InstanceNorm3d):
    """``nn.InstanceNorm3d`` whose output keeps a channels-last input's memory layout.

    torch normalises a channels-last input through a contiguous copy and returns it
    contiguous. The activation after it then meets a channels-last gradient beside a contiguous
    input, and on the CPU its backward falls back to a slow strided loop (11% of a training
    step of the default encoder). One copy back to channels-last keeps the values; only the
    convolutions after it may now compute in the other layout, which rounds otherwise.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normalised = super().forward(x)
        if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
            return normalised.contiguous(memory_format=torch.channels_last_3d)
        return normalised


Norm.add_factory_class(INSTANCE_NORM, LayoutKeepingInstanceNorm3d)


class ImageEncoder(nn.Module):
    """Base of all 3D encoders: input checks and pooling; subclasses build the stages."""

    name: str
    map_channels: int
    downsample_factor: int

    def __init__(self, in_channels: int, pooling: str = "mean", position_channels: bool = False):
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown encoder pooling {pooling!r}; choose one of {POOLINGS}")
        self.in_channels = in_channels
        self.pooling = pooling
        # Three more input channels, each voxel's place on the preprocessed grid
        # (mriclip.imaging.position): a lesion's region is where it lies in the head.
        self.position_channels = position_channels
        self.input_channels = in_channels + (POSITION_CHANNELS if position_channels else 0)
        # build_image_encoder fills this so a trained encoder can be saved and rebuilt.
        self.build_config: dict = {}
        self.locked = False

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def lock(self) -> None:
        """Freeze every parameter and stay in eval mode (LiT's locked image tower): its
        normalisation statistics and dropout then stay as pretraining left them."""
        self.requires_grad_(False)
        self.locked = True
        self.eval()

    def train(self, mode: bool = True) -> ImageEncoder:
        return super().train(mode and not self.locked)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        self.check_input(x)
        for stage in self.stages():
            x = stage(x)
        return x

    @property
    def feature_dim(self) -> int:
        """Width of ``forward``'s output: the deepest map's channels (twice with mean_max)."""
        return self.map_channels * (2 if self.pooling == "mean_max" else 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.forward_features(x).flatten(2)
        if self.pooling == "mean":
            return features.mean(dim=2)
        if self.pooling == "max":
            return features.amax(dim=2)
        return torch.cat([features.mean(dim=2), features.amax(dim=2)], dim=1)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ValueError unless ``x`` is (B, input_channels, D, H, W) with divisible sides."""
        if x.ndim != 2 + SPATIAL_DIMS or x.shape[1] != self.input_channels:
            position = " (image + 3 position channels)" if self.position_channels else ""
            raise ValueError(
                f"{self.name} encoder expects input of shape (B, {self.input_channels}, D, H, "
                f"W){position}; got {tuple(x.shape)}"
            )
        sides = tuple(x.shape[2:])
        factor = self.downsample_factor
        if any(side % factor or side == 0 for side in sides):
            suggestion = tuple(max(factor, round(side / factor) * factor) for side in sides)
            raise ValueError(
                f"{self.name} encoder needs every spatial side to be a positive multiple of "
                f"{factor} (its downsample factor); got {sides}. Crop or pad patches to e.g. "
                f"{suggestion}."
            )


class SwinEncoder(ImageEncoder):
    """The Swin transformer of MONAI's SwinUNETR, keeping only its deepest (stage-4) output."""

    name = "swin"

    def __init__(
        self,
        in_channels: int = 1,
        feature_size: int = 48,
        depths: Sequence[int] = (2, 2, 2, 2),
        num_heads: Sequence[int] = (3, 6, 12, 24),
        window_size: int = 7,
        patch_size: int = 2,
        mlp_ratio: float = 4.0,
        drop_rate: float = 0.0,
        attn_drop_rate: float = 0.0,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        pooling: str = "mean",
        position_channels: bool = False,
    ) -> None:
        super().__init__(in_channels, pooling, position_channels)
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError("swin encoder has exactly 4 stages: give 4 depths and 4 num_heads")
        for stage, heads in enumerate(num_heads):
            if (feature_size * 2**stage) % heads:
                raise ValueError(
                    f"swin stage {stage} has {feature_size * 2**stage} channels, not divisible by "
                    f"its {heads} heads; choose feature_size as a multiple of 12 with default heads"
                )
        self.swin = SwinTransformer(
            in_chans=self.input_channels,
            embed_dim=feature_size,
            window_size=(window_size,) * SPATIAL_DIMS,
            patch_size=(patch_size,) * SPATIAL_DIMS,
            depths=tuple(depths),
            num_heads=tuple(num_heads),
            mlp_ratio=mlp_ratio,
            qkv_bias=True,
            drop_rate=drop_rate,
            attn_drop_rate=attn_drop_rate,
            drop_path_rate=drop_path_rate,
            use_checkpoint=use_checkpoint,
            spatial_dims=SPATIAL_DIMS,
        )
        # Each of the 4 stages ends with patch merging (x2 channels, /2 size), after the patch
        # embedding's own /patch_size.
        self.map_channels = feature_size * 2 ** len(depths)
        self.downsample_factor = patch_size * 2 ** len(depths)

    def stages(self) -> list[nn.Module]:
        swin = self.swin
        embedding = nn.Sequential(swin.patch_embed, swin.pos_drop)
        return [embedding, swin.layers1[0], swin.layers2[0], swin.layers3[0], swin.layers4[0]]

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = super().forward_features(x)
        # SwinUNETR layer-normalises each stage output over channels before use; keep that.
        return self.swin.proj_out(x, normalize=True)


class MedNeXtEncoder(ImageEncoder):
    """The encoder half of MedNeXt (stem, encoder stages with down blocks, bottleneck)."""

    name = "mednext"

    def __init__(
        self,
        in_channels: int = 1,
        init_filters: int = 32,
        kernel_size: int = 3,
        expansion_ratio: int = 2,
        blocks_down: Sequence[int] = (2, 2, 2, 2),
        blocks_bottleneck: int = 2,
        use_residual_connection: bool = True,
        pooling: str = "mean",
        position_channels: bool = False,
    ) -> None:
        super().__init__(in_channels, pooling, position_channels)
        block_options = {
            "expansion_ratio": expansion_ratio,
            "kernel_size": kernel_size,
            "use_residual_connection": use_residual_connection,
            "norm_type": "group",
            "dim": f"{SPATIAL_DIMS}d",
        }
        self.stem = nn.Conv3d(self.input_channels, init_filters, kernel_size=1)
        self.enc_stages = nn.ModuleList()
        self.down_blocks = nn.ModuleList()
        for level, n_blocks in enumerate(blocks_down):
            channels = init_filters * 2**level
            self.enc_stages.append(
                nn.Sequential(
                    *[MedNeXtBlock(channels, channels, **block_options) for _ in range(n_blocks)]
                )
            )
            self.down_blocks.append(MedNeXtDownBlock(channels, 2 * channels, **block_options))
        bottleneck_channels = init_filters * 2 ** len(blocks_down)
        self.bottleneck = nn.Sequential(
            *[
                MedNeXtBlock(bottleneck_channels, bottleneck_channels, **block_options)
                for _ in range(blocks_bottleneck)
            ]
        )
        self.map_channels = bottleneck_channels
        self.downsample_factor = 2 ** len(blocks_down)

    def stages(self) -> list[nn.Module]:
        levels = [
            nn.Sequential(stage, down)
            for stage, down in zip(self.enc_stages, self.down_blocks, strict=True)
        ]
        return [self.stem, *levels, self.bottleneck]


class ResNetEncoder(ImageEncoder):
    """Residual UNet-style encoder: one MONAI ResidualUnit per level, channels doubling.

    Args:
        in_channels: image channels (sequences) of the input.
        filters: channels of the first level; each later level doubles them.
        levels: residual units; every one after the first halves each side.
        subunits: convolutions per residual unit.
        norm: MONAI norm name (``instance`` is made affine).
        act: MONAI activation name.
        pooling: how the deepest map becomes a vector (``mean``, ``max``, ``mean_max``).
        position_channels: the input carries three grid-coordinate channels after the image.
        first_stride: stride of the first level. 2 starts at half resolution: on a CPU the
            full-resolution level is most of the encoder's time, and a strided 3³ convolution
            still sees every voxel.
    """

    name = "resnet"

    def __init__(
        self,
        in_channels: int = 1,
        filters: int = 64,
        levels: int = 5,
        subunits: int = 2,
        norm: str = "instance",
        act: str = "leakyrelu",
        pooling: str = "mean",
        position_channels: bool = False,
        first_stride: int = 1,
    ) -> None:
        super().__init__(in_channels, pooling, position_channels)
        if first_stride not in (1, 2):
            raise ValueError(f"resnet encoder first_stride must be 1 or 2, got {first_stride!r}")
        norm_layer = (INSTANCE_NORM, {"affine": True}) if norm == "instance" else norm
        units = []
        channels_in = self.input_channels
        for level in range(levels):
            channels_out = filters * 2**level
            units.append(
                ResidualUnit(
                    spatial_dims=SPATIAL_DIMS,
                    in_channels=channels_in,
                    out_channels=channels_out,
                    strides=first_stride if level == 0 else 2,
                    subunits=subunits,
                    act=act,
                    norm=norm_layer,
                )
            )
            channels_in = channels_out
        self.levels = nn.ModuleList(units)
        self.norm = norm
        self.map_channels = channels_in
        self.downsample_factor = first_stride * 2 ** (levels - 1)

    def stages(self) -> list[nn.Module]:
        return list(self.levels)

    def check_input(self, x: torch.Tensor) -> None:
        super().check_input(x)
        deepest_voxels = x.shape[2:].numel() // self.downsample_factor**SPATIAL_DIMS
        if self.norm == "instance" and self.training and deepest_voxels < 2:
            # Instance norm over a single voxel has no variance to normalise by.
            raise ValueError(
                f"resnet encoder with instance norm needs its deepest map to hold more than one "
                f"voxel when training; input {tuple(x.shape[2:])} gives 1x1x1. Use larger patches "
                f"(e.g. {2 * self.downsample_factor} per side)."
            )


_REGISTRY: dict[str, type[ImageEncoder]] = {
    encoder.name: encoder for encoder in (SwinEncoder, MedNeXtEncoder, ResNetEncoder)
}


def encoder_names() -> list[str]:
    return sorted(_REGISTRY)


def build_image_encoder(name: str, **kwargs) -> ImageEncoder:
    """Build a registered encoder (``swin``, ``mednext``, ``resnet``) with keyword overrides."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown image encoder {name!r}; choose one of {encoder_names()}")
    encoder = _REGISTRY[name](**kwargs)
    encoder.build_config = {"name": name, **kwargs}
    return encoder
