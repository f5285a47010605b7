"""Project hooks: one place that seeds every RNG and says which device runs."""

import logging

from kedro.framework.hooks import hook_impl

logger = logging.getLogger(__name__)


class DeviceAndSeedHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        from mriclip.training.runtime import describe_device, seed_everything

        seed = context.params.get("seed", 0)
        seed_everything(seed)
        logger.info("mriclip: seed %d, device %s", seed, describe_device())
