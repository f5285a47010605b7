"""Optimiser and schedule: warm-up then cosine, parameter groups, fused AdamW only on CUDA."""

import math
from types import SimpleNamespace

import pytest
import torch

from mriclip.training.methods import freeze_stages
from mriclip.training.schedule import adamw, fusable, param_groups, warmup_cosine


def test_warmup_then_cosine_matches_formula():
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=2.0)
    scheduler = warmup_cosine(optimizer, warmup_steps=4, total_steps=14)
    lrs = []
    for _ in range(14):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    assert lrs[:4] == pytest.approx([0.5, 1.0, 1.5, 2.0])
    assert lrs[4:] == pytest.approx([1 + math.cos(math.pi * k / 10) for k in range(10)])
    with pytest.raises(ValueError, match="warmup_steps"):
        warmup_cosine(optimizer, warmup_steps=20, total_steps=10)


def test_param_groups_split_decay_and_skip_frozen():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.LayerNorm(4), torch.nn.Linear(4, 2))
    freeze_stages([model[0]], 1, "vision")
    groups = param_groups({"vision": (model, 0.1)}, weight_decay=0.5)
    by_name = {g["name"]: g for g in groups}
    assert [p.shape for p in by_name["vision"]["params"]] == [torch.Size([2, 4])]
    assert by_name["vision_no_decay"]["weight_decay"] == 0.0
    assert len(by_name["vision_no_decay"]["params"]) == 3  # norm weight+bias, last bias
    with pytest.raises(ValueError, match="cannot freeze 3 text stages: it has 1"):
        freeze_stages([model[0]], 3, "text")


def test_adamw_is_fused_only_for_floating_point_cuda_parameters():
    def tensor(device, dtype=torch.float32):
        # What the choice reads of a parameter; no CUDA tensor can be made on this CPU.
        return SimpleNamespace(device=torch.device(device), dtype=dtype)

    assert fusable([tensor("cuda"), tensor("cuda", torch.bfloat16)])
    assert not fusable([tensor("cuda"), tensor("cpu")])  # one off the GPU
    assert not fusable([tensor("cuda"), tensor("cuda", torch.int64)])
    assert not fusable([])
    # On this CPU: torch's default implementation, which steps like a plain AdamW.
    model = torch.nn.Linear(3, 2)
    twin = torch.nn.Linear(3, 2)
    twin.load_state_dict(model.state_dict())
    optimizer = adamw(param_groups({"all": (model, 0.1)}, weight_decay=0.5))
    assert not optimizer.defaults["fused"]
    reference = torch.optim.AdamW(param_groups({"all": (twin, 0.1)}, weight_decay=0.5))
    for module, step in ((model, optimizer), (twin, reference)):
        module(torch.ones(4, 3)).square().sum().backward()
        step.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
