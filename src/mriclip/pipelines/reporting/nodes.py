"""Thin node of the reporting pipeline: catalog inputs in, HTML out."""

from __future__ import annotations

from mriclip.reporting.render import render_report as render_html


def render_report(reporting: dict, **outputs) -> str:
    """The run's HTML report of the run's outputs (the pipeline's ``REPORT_INPUTS``; the
    ``*_figure`` entries are its figures); ``reporting`` holds title, settings_shown and
    decimals."""
    figures = {
        name.removesuffix("_figure"): outputs.pop(name)
        for name in list(outputs)
        if name.endswith("_figure")
    }
    return render_html(**outputs, figures=figures, **reporting)
