"""The configuration as a user gets it: conf/base, and each shipped environment over it.

What can be checked without a long run is checked here for every shipped environment: each
parameter group builds the objects its pipeline builds from it, each tuning search space holds
the current values (so the defaults can be enqueued) and its trials' settings are valid at
the ends of every range, and each catalog entry a registered pipeline reads or writes
resolves. ``tests/pipelines/test_shipped_run.py`` runs every pipeline on conf/base.
"""

from __future__ import annotations

import importlib
import warnings

import pandas as pd
import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog

from mriclip import settings
from mriclip.evaluation.prompts import zero_shot_spec
from mriclip.imaging.augmentation import AugmentationConfig
from mriclip.imaging.file_index import parameters_contract
from mriclip.imaging.preprocessing import PreprocessingConfig
from mriclip.imaging.validation import GridRule
from mriclip.models.encoders import build_image_encoder
from mriclip.phantom import PhantomConfig
from mriclip.splits import minimum_patients
from mriclip.text.templates import SentenceTemplates
from mriclip.training.alignment import AlignmentConfig
from mriclip.training.engine import configs_from_params
from mriclip.training.methods import AlignmentMethod
from mriclip.training.pretraining import PretrainingConfig
from mriclip.tuning.search_space import current_values, parse_search_space, resolve, with_values
from tests.pipelines.helpers import PROJECT

SHIPPED = ["base", "fast", "gpu", "multicontrast"]
#: Put into the catalog at run time, not declared in catalog.yml.
RUNTIME_DATASETS = {"parameters", "run_metadata"}


def loader(env: str) -> OmegaConfigLoader:
    return OmegaConfigLoader(
        str(PROJECT / "conf"), **{**settings.CONFIG_LOADER_ARGS, "default_run_env": env}
    )


@pytest.fixture(scope="module", params=SHIPPED)
def env(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def parameters(env) -> dict:
    return loader(env)["parameters"]


def test_data_parameters_validate(parameters):
    demo_data = dict(parameters["demo_data"])
    assert isinstance(demo_data.pop("overwrite_existing"), bool)  # the node's own keys
    assert demo_data.pop("workers") >= 1
    PhantomConfig.from_params(demo_data)
    engineering = parameters["data_engineering"]
    config = PreprocessingConfig(**engineering["preprocessing"])
    GridRule(config.target_spacing, engineering["min_extent_voxels"])
    parameters_contract(engineering["sequences"], engineering["missing_sequences"])
    assert engineering["source"] in ("files", "bids")
    assert engineering["on_invalid"] in ("raise", "skip")
    assert engineering["workers"] >= 1
    assert engineering["scan_timeout_s"] > 0
    assert engineering["max_abs_intensity"] > 0
    assert parameters["inference"]["scan_timeout_s"] > 0
    # the phantom the environment writes can be split as it is configured
    splits = engineering["splits"]
    assert parameters["demo_data"]["n_patients"] >= minimum_patients(
        splits["test_fraction"], splits["n_folds"]
    )
    SentenceTemplates.from_params(parameters["sentences"])


def test_training_parameters_validate(parameters):
    pretraining = parameters["pretraining"]
    configs_from_params(pretraining["training"], PretrainingConfig, 0, "pretraining.training")
    AugmentationConfig(**pretraining["augmentation"])
    alignment = parameters["alignment"]
    configs_from_params(alignment["training"], AlignmentConfig, 0, "alignment.training")
    AlignmentMethod.from_params(alignment)
    AugmentationConfig(**alignment["augmentation"])
    assert alignment["image_encoder"] == pretraining["encoder"]  # one encoder, both pipelines
    encoder = alignment["image_encoder"]
    build_image_encoder(encoder["name"], in_channels=1, **encoder["kwargs"])


def test_every_augmentation_probability_is_in_the_yaml(parameters):
    """The code's probabilities are all 0, so a transform the YAML leaves out never fires:
    each augmenting pipeline lists every one (a forgotten shift_prob once fired unseen)."""
    probabilities = {
        name for name in AugmentationConfig.__dataclass_fields__ if name.endswith("_prob")
    }
    assert all(getattr(AugmentationConfig(), name) == 0.0 for name in probabilities)
    for where, listed in [
        ("pretraining", parameters["pretraining"]["augmentation"]),
        ("alignment", parameters["alignment"]["augmentation"]),
        ("alignment.slip", parameters["alignment"]["slip"]["augmentation"]),
    ]:
        assert probabilities <= set(listed), (where, sorted(probabilities - set(listed)))


def test_evaluation_parameters_validate(parameters):
    training_rows = pd.DataFrame({"diagnosis": ["atrophy", "none"], "regions": ["frontal", ""]})
    spec = zero_shot_spec(
        parameters["regions"], parameters["sentences"], parameters["evaluation"], training_rows
    )
    assert set(spec["targets"]) >= {"regions"}
    assert parameters["inference"]["queries"]


def test_tuning_search_space_holds_the_defaults_and_every_trial_is_valid(parameters):
    tuning, alignment = parameters["tuning"], parameters["alignment"]
    space = parse_search_space(tuning["search_space"], alignment)
    defaults = current_values(space, alignment)  # raises when a default lies outside
    overrides = {f"training.{k}": v for k, v in tuning["trial_overrides"]["training"].items()}
    trials = [defaults]
    for parameter in space:  # each end of each range, the others at their defaults
        ends = (
            parameter.choices
            if parameter.type == "categorical"
            else (parameter.low, parameter.high)
        )
        trials += [{**defaults, parameter.name: end} for end in ends]
    for sampled in trials:
        runtime = with_values(resolve(alignment, space, sampled), overrides)
        configs_from_params(runtime["training"], AlignmentConfig, 0, "alignment.training")


@pytest.fixture(scope="module")
def registry():
    bootstrap_project(PROJECT)
    return dict(pipelines)


def test_every_dataset_a_pipeline_needs_resolves(env, parameters, registry):
    catalog = DataCatalog.from_config(loader(env)["catalog"])
    for name, pipeline in registry.items():
        for dataset in sorted(pipeline.datasets()):
            if dataset.startswith("params:"):
                value = parameters
                for key in dataset.removeprefix("params:").split("."):
                    assert key in value, (env, name, dataset)
                    value = value[key]
            elif dataset not in RUNTIME_DATASETS:
                assert dataset in catalog, (env, name, dataset)
                assert catalog.get(dataset) is not None, (env, name, dataset)


def test_the_config_loader_starts_without_omegaconf_deprecation_noise():
    """Kedro's loader registers its resolvers with a call OmegaConf deprecates; the project's
    settings silence that warning (nobody running mriclip can act on it), and only it."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("default")
        importlib.reload(settings)
        loader("base")["parameters"]
        warnings.warn("another warning", UserWarning, stacklevel=1)
    messages = [str(warning.message) for warning in caught]
    assert not [message for message in messages if "register_new_resolver" in message]
    assert "another warning" in messages
