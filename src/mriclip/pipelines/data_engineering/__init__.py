"""The data_engineering pipeline."""

from mriclip.pipelines.data_engineering.pipeline import create_pipeline

__all__ = ["create_pipeline"]
