"""demo_data: writes the embedded phantom cohort into data/01_raw (the user data contract)."""

from mriclip.pipelines.demo_data.pipeline import create_pipeline

__all__ = ["create_pipeline"]
