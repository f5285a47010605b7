"""Project hooks: seed every RNG, log the device, record which data a run used, and log
runs to MLflow when kedro-mlflow is installed."""

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

        # The raw parameters (runtime --params merged in): context.params would validate them
        # against every registered pipeline, importing all their nodes, before the run has
        # said which pipeline it runs.
        seed = context.config_loader["parameters"].get("seed", 0)
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


class MlflowTrackingHooks:
    """Logs mriclip's outputs into the MLflow run that kedro-mlflow opens for each
    ``kedro run`` (kedro-mlflow itself logs the parameters, see ``conf/base/mlflow.yml``):
    training histories as per-step metrics, the evaluation metric dicts under dotted keys,
    tuning trials as child runs, the report and the model as artifacts. Does nothing while no
    run is active (tracking disabled for a pipeline in ``mlflow.yml``)."""

    #: history DataFrame -> metric prefix (one metric per column, ``step`` as the step)
    HISTORIES = {"pretraining_history": "pretraining", "alignment_history": "alignment"}
    #: nested metrics dict -> metric prefix
    METRIC_DICTS = {
        "zero_shot_metrics": "zero_shot",
        "retrieval_metrics": "retrieval",
        "baseline_metrics": "baseline",
    }
    TRIALS = "trials_table"
    #: text output -> artifact file
    TEXT_ARTIFACTS = {"report": "report/report.html"}
    #: output whose saved file is logged -> artifact folder
    FILE_ARTIFACTS = {"clip_model": "model"}

    @hook_impl
    def after_catalog_created(self, catalog) -> None:
        self._catalog = catalog

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data) -> None:
        import mlflow

        from mriclip import tracking

        run = mlflow.active_run()
        if run is None:
            return
        client, run_id = mlflow.MlflowClient(), run.info.run_id
        if dataset_name in self.HISTORIES:
            prefix = self.HISTORIES[dataset_name]
            tracking.log_metrics(client, run_id, tracking.history_metrics(data, prefix))
        elif dataset_name in self.METRIC_DICTS:
            tracking.log_metric_dict(client, run_id, data, self.METRIC_DICTS[dataset_name])
        elif dataset_name == self.TRIALS:
            tracking.log_trials(client, run_id, data)
        elif dataset_name in self.TEXT_ARTIFACTS:
            client.log_text(run_id, data, self.TEXT_ARTIFACTS[dataset_name])
        elif dataset_name in self.FILE_ARTIFACTS:
            with self._catalog.get(dataset_name).saved_file() as path:
                client.log_artifact(run_id, path, self.FILE_ARTIFACTS[dataset_name])
        else:
            return
        logger.info("mlflow: logged %s to run %s", dataset_name, run_id)


def catalog_save_version(catalog, names) -> str | None:
    """The timestamp under which this run saves versioned outputs (the same for all)."""
    for name in names:
        dataset = catalog.get(name) if name in catalog else None
        if isinstance(dataset, AbstractVersionedDataset):
            return dataset.resolve_save_version()
    return None
