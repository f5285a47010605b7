"""Project pipelines."""

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: The order in which `__default__` chains the pipelines on the phantom cohort.
DEFAULT_CHAIN = (
    "demo_data",
    "data_engineering",
    "pretraining",
    "alignment",
    "evaluation",
    "reporting",
)


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_CHAIN if name in pipelines), Pipeline([])
    )
    return pipelines
