"""reporting: one self-contained HTML report of a run."""

from mriclip.pipelines.reporting.pipeline import create_pipeline

__all__ = ["create_pipeline"]
