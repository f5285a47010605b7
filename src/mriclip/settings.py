"""Kedro project settings."""

from kedro.config import OmegaConfigLoader

from mriclip.hooks import DeviceAndSeedHooks

HOOKS = (DeviceAndSeedHooks(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
}
