"""The registered pipelines: namespaces group nodes for kedro-viz without renaming any
dataset, since catalog entry names are what other pipelines and tools read."""

import pytest
from kedro.config import OmegaConfigLoader
from kedro.framework.project import pipelines
from kedro.framework.startup import bootstrap_project
from kedro.io import DataCatalog

from mriclip import settings
from mriclip.pipeline_registry import DEFAULT_CHAIN
from tests.pipelines.helpers import PROJECT

#: Put into the catalog at run time, not declared in catalog.yml.
RUNTIME_DATASETS = {"parameters", "run_metadata"}


@pytest.fixture(scope="module")
def registry():
    bootstrap_project(PROJECT)
    return dict(pipelines)


@pytest.fixture(scope="module")
def catalog():
    loader = OmegaConfigLoader(str(PROJECT / "conf"), **settings.CONFIG_LOADER_ARGS)
    return DataCatalog.from_config(loader["catalog"])


def test_every_node_is_grouped_under_its_pipeline(registry):
    assert set(DEFAULT_CHAIN) | {"tuning"} <= set(registry)
    for name in set(registry) - {"__default__"}:
        for node in registry[name].nodes:
            assert node.namespace == name, node.name
            assert node.name == f"{name}.{node.name.rsplit('.', 1)[-1]}"


def test_dataset_names_stay_catalog_entries(registry, catalog):
    namespaces = tuple(f"{name}." for name in registry)
    for name, pipeline in registry.items():
        for dataset in pipeline.datasets():
            if dataset.startswith("params:"):
                assert not dataset.removeprefix("params:").startswith(namespaces), dataset
                continue
            assert dataset in RUNTIME_DATASETS or dataset in catalog, (name, dataset)


def test_inputs_read_across_pipelines_keep_their_names(registry):
    default = registry["__default__"]
    assert {"scan_sentences", "splits", "preprocessed_volumes", "pretrained_encoder"} <= (
        registry["alignment"].inputs()
    )
    assert default.inputs() == {
        "raw_scans_on_disk",
        "bids_dataset",
        "unlabelled_images",
        # kept between runs, so a re-run redoes only the scans that changed
        "preprocessing_cache",
        "unlabelled_preprocessing_cache",
        "lesion_ablated_cache",
        "parameters",
        "run_metadata",
        *(d for d in default.inputs() if d.startswith("params:")),
    }


def test_nodes_carry_tags(registry):
    tags = {node.name: node.tags for node in registry["__default__"].nodes}
    assert {"gpu", "slow", "training"} <= tags["alignment.train_clip_model"]
    assert {"gpu", "slow", "training"} <= tags["pretraining.pretrain_encoder"]
    assert "report" in tags["reporting.render_report"]
    assert "figures" in tags["evaluation.evaluation_figures"]
    assert {"gpu", "training"} <= next(iter(registry["tuning"].nodes)).tags


LAYERS = {
    "01_raw": "raw",
    "02_intermediate": "intermediate",
    "03_primary": "primary",
    "04_feature": "feature",
    "05_model_input": "model_input",
    "06_models": "models",
    "07_model_output": "model_output",
    "08_reporting": "reporting",
}


def test_every_catalog_entry_declares_the_layer_of_its_folder():
    loader = OmegaConfigLoader(str(PROJECT / "conf"), **settings.CONFIG_LOADER_ARGS)
    config = loader["catalog"]
    assert len(config) > 30
    for name, entry in config.items():
        layer = entry["metadata"]["kedro-viz"]["layer"]
        location = entry.get("filepath") or entry.get("path") or entry.get("url")
        if location is None:  # held in memory: the layer of what it holds
            assert entry["type"] == "MemoryDataset" and layer == "raw", name
            continue
        folder = next((f for f in LAYERS if f in location), None)
        assert layer == (LAYERS[folder] if folder else "reporting"), (name, location)
    # kedro-viz reads the layer from the dataset object, so every type must keep it
    catalog = DataCatalog.from_config(
        {name: entry for name, entry in config.items() if "{" not in name}
    )
    for name in catalog:
        assert catalog.get(name).metadata["kedro-viz"]["layer"] in LAYERS.values(), name
