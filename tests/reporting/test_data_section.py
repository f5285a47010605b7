"""The data section: counts, splits and escaped problems."""

from tests.reporting.helpers import HOSTILE_ID, report_of


def test_data_summary_lists_counts_and_escaped_problems(run):
    html = report_of(run)
    assert "<b>50</b><span>scans used</span>" in html
    assert "<b>25</b><span>patients</span>" in html
    assert f"<b>{len(run['lesion_table'])}</b><span>lesions</span>" in html
    assert '<td>test (held out)</td><td class="num">20</td><td class="num">10</td>' in html
    assert "truncated gzip stream" in html and "re-export the scan" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert HOSTILE_ID not in html
