"""The whole document: missing parts stated, an empty report still renders."""

from mriclip.reporting.render import render_report
from tests.reporting.helpers import headline_text, report_of


def test_missing_parts_are_stated_not_fatal(run):
    scan_only = {"scan_level": {"model": run["zero_shot_metrics"]["scan_level"]["model"]}}
    html = report_of(
        run,
        zero_shot_metrics=scan_only,
        retrieval_metrics={},
        baseline_metrics={},
        pretraining_summary=None,
        catalog_problems=run["catalog_problems"].iloc[:0],
        run_metadata=None,
        figures={**run["figures"], "reconstruction": None},
    )
    assert "Lesion level zero-shot metrics not computed in this run." in html
    assert "No random baseline in this run." in html
    assert "Scan level retrieval metrics not computed in this run." in html
    assert "the encoder was not pretrained in this run" in html
    assert "No problems: every scan and table row passed validation." in html
    assert "Figure not produced in this run." in html
    assert "No catalog version record" in html
    assert "linear probe AUC n/a" in headline_text(html)
    assert "retrieval MRR n/a (random n/a)" in headline_text(html)


def test_an_empty_report_still_renders():
    html = render_report()
    assert "Scan-level zero-shot macro AUC n/a" in html
    assert "No split table in this run." in html
    assert "No alignment training history in this run." in html
