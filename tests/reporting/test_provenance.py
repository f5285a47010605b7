"""Settings and catalog versions."""

from tests.reporting.helpers import report_of


def test_settings_and_versions_are_shown(run):
    html = report_of(run)
    assert "<h3>alignment</h3>" in html and "init_temperature: 0.1" in html
    assert "<h3>data_engineering.preprocessing</h3>" in html
    assert "2026-01-01T00.00.00.000Z" in html and "cpu (2 threads)" in html
    assert "Catalog versions this report came from" in html
