"""Run a pipeline on an in-memory catalog with the parameters of a conf environment, or copy
the project to run it through Kedro itself."""

import shutil
import tempfile
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.io import DataCatalog, MemoryDataset
from kedro.runner import SequentialRunner

from mriclip import settings
from mriclip.datasets import BIDSDataset, ScanStore

PROJECT = Path(__file__).resolve().parents[2]
CACHES = ("preprocessing_cache", "unlabelled_preprocessing_cache", "lesion_ablated_cache")
# The caches of in-memory runs; their outputs load from there until the test session ends.
_CACHE_ROOT = tempfile.TemporaryDirectory(prefix="mriclip-test-caches-")


class KeptDataset(MemoryDataset):
    """A MemoryDataset the runner cannot release, so tests can read intermediate outputs."""

    def _release(self) -> None:
        pass


def load_parameters(env: str = "test") -> dict:
    args = {**settings.CONFIG_LOADER_ARGS, "default_run_env": env}
    loader = OmegaConfigLoader(str(PROJECT / "conf"), **args)
    return loader["parameters"]


def run_in_memory(pipeline, inputs: dict, env: str = "test", overrides: dict | None = None) -> dict:
    """Every input and output lives in memory; returns every dataset the run produced.

    Runs on the file layout need no BIDS folder: unless given, ``bids_dataset`` is one that
    does not exist (loading it reads nothing; only data_engineering.source: bids opens it).
    Likewise ``raw_ablated_images`` is an absent folder (no raw twins) unless given, and each
    preprocessing cache a fresh folder (so nothing is reused) unless given."""
    parameters = {**load_parameters(env), **(overrides or {})}
    if "bids_dataset" in pipeline.inputs() and "bids_dataset" not in inputs:
        inputs = {**inputs, "bids_dataset": BIDSDataset(path="no-bids-dataset").load()}
    if "raw_ablated_images" in pipeline.inputs() and "raw_ablated_images" not in inputs:
        inputs = {**inputs, "raw_ablated_images": {}}
    for cache in CACHES:
        if cache in pipeline.inputs() and cache not in inputs:
            inputs = {**inputs, cache: ScanStore(tempfile.mkdtemp(dir=_CACHE_ROOT.name))}
    datasets = {name: MemoryDataset(value) for name, value in inputs.items()}
    for name in pipeline.inputs():
        if name == "parameters":
            datasets[name] = MemoryDataset(parameters)
        elif name.startswith("params:"):
            value = parameters
            for key in name.removeprefix("params:").split("."):
                value = value[key]
            datasets[name] = MemoryDataset(value)
    for name in pipeline.all_outputs():
        datasets[name] = KeptDataset()
    catalog = DataCatalog(datasets)
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in pipeline.all_outputs()}


def copy_project(destination: Path) -> Path:
    """The project's conf (with an empty conf/local), pyproject.toml and src in ``destination``."""
    shutil.copytree(PROJECT / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir()
    shutil.copy(PROJECT / "pyproject.toml", destination)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(PROJECT / "src", destination / "src", ignore=ignore)
    return destination
