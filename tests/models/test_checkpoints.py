"""Encoder weight loading: our files, Lightning checkpoints, MONAI models, failures."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import MedNeXt, SwinUNETR
from safetensors.torch import save_file

from mriclip.models.checkpoints import (
    build_encoder_from_saved,
    load_encoder_weights,
    save_encoder,
)
from mriclip.models.encoders import build_image_encoder

TINY_RESNET = {"filters": 4, "levels": 3, "subunits": 1}


def outputs(encoder, seed: int = 0) -> torch.Tensor:
    x = torch.randn(2, 1, 16, 16, 16, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return encoder.eval()(x)


def fresh_pair():
    torch.manual_seed(0)
    trained = build_image_encoder("resnet", **TINY_RESNET)
    torch.manual_seed(1)
    untrained = build_image_encoder("resnet", **TINY_RESNET)
    assert not torch.equal(outputs(trained), outputs(untrained))
    return trained, untrained


def test_saved_encoder_round_trip_is_bit_exact(tmp_path):
    trained, _ = fresh_pair()
    path = tmp_path / "encoder.pt"
    torch.save(save_encoder(trained), path)
    rebuilt = build_encoder_from_saved(path)
    assert rebuilt.build_config == {"name": "resnet", **TINY_RESNET}
    assert torch.equal(outputs(rebuilt), outputs(trained))


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_state_dict_files_load_bit_exact(tmp_path, suffix):
    trained, untrained = fresh_pair()
    path = tmp_path / f"weights{suffix}"
    if suffix == ".safetensors":
        save_file(trained.state_dict(), str(path))
    else:
        torch.save(save_encoder(trained, {"name": "resnet", **TINY_RESNET}), path)
    report = load_encoder_weights(untrained, path)
    assert report.matched_fraction == 1.0
    assert not (report.missing or report.unexpected or report.shape_mismatched)
    assert torch.equal(outputs(untrained), outputs(trained))


def test_lightning_checkpoint_with_prefixes_loads_and_reports(tmp_path, caplog):
    trained, untrained = fresh_pair()
    state_dict = {f"model._orig_mod.encoder.{k}": v for k, v in trained.state_dict().items()}
    state_dict["model._orig_mod.text_head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "epoch=3.ckpt"
    torch.save({"state_dict": state_dict, "epoch": 3, "hyper_parameters": {"lr": 1e-4}}, path)
    with caplog.at_level("INFO", logger="mriclip.models.checkpoints"):
        report = load_encoder_weights(untrained, path)
    assert report.stripped_prefix == "model._orig_mod.encoder."
    assert len(report.matched) == len(trained.state_dict())
    assert report.unexpected == ["model._orig_mod.text_head.weight"]
    assert "tensors loaded" in caplog.text
    assert torch.equal(outputs(untrained), outputs(trained))


def test_monai_swinunetr_and_mednext_weights_load_into_our_encoders():
    swin_unetr = SwinUNETR(in_channels=1, out_channels=2, feature_size=12)
    swin = build_image_encoder("swin", feature_size=12)
    report = load_encoder_weights(swin, swin_unetr.state_dict())
    assert (report.stripped_prefix, report.added_prefix) == ("swinViT.", "swin.")
    assert report.matched_fraction == 1.0

    mednext = MedNeXt(init_filters=4, kernel_size=3, use_residual_connection=True)
    encoder = build_image_encoder("mednext", init_filters=4)
    report = load_encoder_weights(encoder, mednext.state_dict())
    assert report.matched_fraction == 1.0
    assert report.unexpected  # the decoder
    assert torch.equal(encoder.stem.weight, mednext.stem.weight)


def test_nothing_matching_raises_naming_the_file(tmp_path):
    _, untrained = fresh_pair()
    path = tmp_path / "other.pt"
    torch.save({"state_dict": {"decoder.weight": torch.zeros(2)}}, path)
    with pytest.raises(ValueError, match="other.pt"):
        load_encoder_weights(untrained, path, strict_fraction=0.0)


def test_shape_mismatches_are_reported_and_strict_fraction_enforced():
    torch.manual_seed(0)
    two_channels = build_image_encoder("resnet", in_channels=2, **TINY_RESNET)
    _, untrained = fresh_pair()
    report = load_encoder_weights(untrained, two_channels.state_dict(), strict_fraction=0.0)
    assert report.shape_mismatched
    assert all(name.startswith("levels.0.") for name, _, _ in report.shape_mismatched)
    with pytest.raises(ValueError, match="strict_fraction"):
        load_encoder_weights(untrained, two_channels.state_dict(), strict_fraction=1.0)


def test_files_with_pickled_objects_are_refused(tmp_path):
    trained, untrained = fresh_pair()
    path = tmp_path / "unsafe.pt"
    torch.save({"state_dict": trained.state_dict(), "callback": _Pickled()}, path)
    with pytest.raises(ValueError, match="weights_only"):
        load_encoder_weights(untrained, path)


class _Pickled:
    pass
