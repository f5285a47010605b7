"""Project hooks: seed every RNG, log the device, and record which data a run used."""

from __future__ import annotations

import logging

from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset
from kedro.io.core import AbstractVersionedDataset, DatasetError

import mriclip

logger = logging.getLogger(__name__)


class DeviceAndSeedHooks:
    @hook_impl
    def after_context_created(self, context) -> None:
        from mriclip.training.runtime import describe_device, seed_everything

        seed = context.params.get("seed", 0)
        seed_everything(seed)
        logger.info("mriclip: seed %d, device %s", seed, describe_device())


class RunMetadataHooks:
    """Puts ``run_metadata`` into the catalog: the run's save version and the version of
    every versioned dataset the pipeline reads or writes, so a report says where it came from."""

    @hook_impl
    def before_pipeline_run(self, run_params: dict, pipeline, catalog) -> None:
        from mriclip.training.runtime import describe_device

        save_version = catalog_save_version(catalog, pipeline.all_outputs())
        versions = {}
        for name in sorted(pipeline.datasets()):
            dataset = catalog.get(name) if name in catalog else None
            if not isinstance(dataset, AbstractVersionedDataset):
                continue
            if name in pipeline.all_outputs():
                versions[name] = save_version or "this run"
            else:
                try:
                    versions[name] = dataset.resolve_load_version() or "latest"
                except DatasetError:
                    versions[name] = "not saved yet"
        metadata = {
            "save_version": save_version,
            "kedro_env": run_params.get("env") or "local",
            "pipeline": ", ".join(run_params.get("pipeline_names") or ["__default__"]),
            "versions": versions,
            "mriclip_version": mriclip.__version__,
            "device": describe_device(),
        }
        catalog["run_metadata"] = MemoryDataset(metadata)


def catalog_save_version(catalog, names) -> str | None:
    """The timestamp under which this run saves versioned outputs (the same for all)."""
    for name in names:
        dataset = catalog.get(name) if name in catalog else None
        if isinstance(dataset, AbstractVersionedDataset):
            return dataset.resolve_save_version()
    return None
