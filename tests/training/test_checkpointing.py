import pytest
import torch
from torch import nn

from mriclip.training.checkpointing import Checkpointer, TrainedState


class Tower(nn.Linear):
    def __init__(self) -> None:
        super().__init__(3, 2)
        self.locked = False


def model() -> nn.Module:
    torch.manual_seed(0)
    built = nn.ModuleDict({"tower": Tower(), "head": nn.Linear(2, 1)})
    built["tower"].locked = True
    return built


def test_the_trained_state_leaves_out_locked_parts_and_loads_back():
    trained = TrainedState(model())
    assert trained.locked == ("tower.",)
    assert set(trained.state()) == {"head.weight", "head.bias"}
    other = model()
    with torch.no_grad():
        other["head"].weight.fill_(3.0)
    TrainedState(other).load(trained.state())
    torch.testing.assert_close(other["head"].weight, trained.model["head"].weight)


def test_a_state_that_does_not_fit_is_refused_naming_the_keys():
    trained = TrainedState(model())
    with pytest.raises(ValueError, match=r"does not fit this model \(1 keys, e.g. \['head.bias'\]"):
        trained.load({"head.weight": torch.zeros(1, 2)})
    with pytest.raises(ValueError, match="stray"):
        trained.load({**trained.state(), "stray": torch.zeros(1)})


def test_the_digest_follows_the_locked_weights_only():
    first, second = TrainedState(model()), TrainedState(model())
    assert first.digest() == second.digest()
    with torch.no_grad():
        second.model["head"].bias.add_(1.0)
    assert first.digest() == second.digest()
    with torch.no_grad():
        second.model["tower"].bias.add_(1e-6)
    assert first.digest() != second.digest()
    assert TrainedState(nn.Linear(2, 1)).digest() is None


def test_a_checkpoint_older_than_a_setting_resumes_where_the_setting_is_unset(tmp_path):
    checkpoints = Checkpointer(tmp_path)
    before = {"settings": {"lr": 1.0}}  # saved before locked_state was a setting
    checkpoints.check_resumable(before, {"lr": 1.0, "locked_state": None})
    with pytest.raises(ValueError, match=r"other settings \(\['locked_state'\]\)"):
        checkpoints.check_resumable(before, {"lr": 1.0, "locked_state": "ab12"})
    # saved before mixed_precision_cpu was a setting: those runs trained in float32
    checkpoints.check_resumable(before, {"lr": 1.0, "mixed_precision_cpu": False})
    with pytest.raises(ValueError, match=r"other settings \(\['mixed_precision_cpu'\]\)"):
        checkpoints.check_resumable(before, {"lr": 1.0, "mixed_precision_cpu": True})
