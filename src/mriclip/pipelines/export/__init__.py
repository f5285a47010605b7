"""export: the trained clip_model packaged to leave the project."""

from mriclip.pipelines.export.pipeline import create_pipeline

__all__ = ["create_pipeline"]
