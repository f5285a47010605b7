"""The pretraining pipeline."""

from mriclip.pipelines.pretraining.pipeline import create_pipeline

__all__ = ["create_pipeline"]
