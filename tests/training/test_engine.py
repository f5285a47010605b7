import pytest

from mriclip.training.alignment import AlignmentConfig
from mriclip.training.engine import configs_from_params
from mriclip.training.pretraining import PretrainingConfig
from tests.pipelines.helpers import load_parameters

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


def test_missing_keys_are_named():
    params = load_parameters("test")["pretraining"]["training"]
    params.pop("lr")
    with pytest.raises(ValueError, match=r"pretraining.training: .*missing key\(s\) \['lr'\]"):
        configs_from_params(params, PretrainingConfig, 0, "pretraining.training")
