"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from mriclip.hooks import DeviceAndSeedHooks, RunMetadataHooks

HOOKS = (DeviceAndSeedHooks(), RunMetadataHooks())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/test and conf/gpu list only the parameters they change.
    "merge_strategy": {"parameters": "soft"},
}
