"""The alignment pipeline."""

from mriclip.pipelines.alignment.pipeline import create_pipeline

__all__ = ["create_pipeline"]
