"""Cells and blocks: numbers, estimates, embedded figures."""

import base64
import re

import pytest
from matplotlib.figure import Figure

from mriclip.reporting.blocks import PNG_SIGNATURE, figure_png
from tests.reporting.helpers import (
    report_of,
)


def test_figures_must_be_png_or_matplotlib():
    figure = Figure(figsize=(1, 1))
    assert figure_png(figure).startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="not a PNG"):
        figure_png(b"GIF89a")


def test_every_figure_is_embedded_as_png(run):
    html = report_of(run)
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(run["figures"]) == 5
    assert {base64.b64decode(data) for data in embedded} == set(run["figures"].values())
