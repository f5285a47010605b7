"""inference: a trained model applied to new scans."""

from mriclip.pipelines.inference.pipeline import create_pipeline

__all__ = ["create_pipeline"]
