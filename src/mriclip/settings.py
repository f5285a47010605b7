"""Kedro project settings."""

import warnings
from importlib.util import find_spec

from kedro.config import OmegaConfigLoader

from mriclip.hooks import DeviceAndSeedHooks, MlflowTrackingHooks, RunMetadataHooks

# Kedro's config loader and kedro-mlflow's hook register their resolvers with an OmegaConf
# call that OmegaConf 2.4 deprecates: three warnings at every run that no user can act on.
warnings.filterwarnings(
    "ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning
)

HOOKS = (DeviceAndSeedHooks(), RunMetadataHooks())
# With the `mlflow` extra, kedro-mlflow (a plugin Kedro registers by itself) opens a run per
# `kedro run`; ours logs histories, metrics, trials, report and model into it.
if find_spec("kedro_mlflow") is not None:
    HOOKS += (MlflowTrackingHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/test and conf/gpu list only the parameters they change; conf/local/mlflow.yml
    # (kedro-mlflow) only the settings it changes, e.g. the tracking URI.
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
}
