import pytest

from tests.reporting.helpers import report_inputs


@pytest.fixture(scope="package")
def run():
    """Report inputs shared by the reporting tests (built once: t-SNE and the fits take a while)."""
    return report_inputs()
