"""Metric tables: the model beside its controls and baselines, fold summaries."""

import re

from mriclip.evaluation.summary import mean_and_sem
from mriclip.reporting.blocks import format_number
from tests.reporting.helpers import headline_text, report_of


def test_metric_tables_show_model_random_and_baselines(run):
    html = report_of(run)
    model = run["zero_shot_metrics"]["scan_level"]["model"]
    probe = run["baseline_metrics"]["linear_probe"]
    row = re.search(r"<tr><td>AUC — frontal</td>(.*?)</tr>", html).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    before = run["zero_shot_metrics"]["scan_level"]["before_alignment"]
    assert cells[1:5] == [
        f"{model['per_region']['frontal']['auc']:.3f}",
        f"{before['per_region']['frontal']['auc']:.3f}",
        "0.500",
        f"{probe['per_region']['frontal']['auc']:.3f}",
    ]
    for label in (
        "top-1 accuracy",
        "top-3 accuracy",
        "AUC, micro",
        "linear probe",
        "early fusion †",
    ):
        assert label in html
    assert "upper reference" in html  # the fusion caveat is spelled out
    retrieval = run["retrieval_metrics"]["scan_level"]["model"]["overall"]
    for metric in ("average_precision", "r_precision", "reference_map", "reference_mrr"):
        assert f"{retrieval[metric]:.3f}" in html
    assert "Table 4 definitions, not standard" in html
    sweep = run["zero_shot_metrics"]["scan_level"]["gap_sweep"]
    assert "0 (unshifted)" in html and f"|g| = {sweep['gap_norm']:.3f}" in html
    assert "0.412" in html and "0.988" in html  # pretraining loss beside its baseline
    assert "best validation loss (step 5)" in html and "1.700" in html
    assert "auc macro at best validation" in html and "0.610" in html


def test_baselines_sit_at_the_level_they_were_fitted_at(run):
    lesion_probe = {**run["baseline_metrics"]["linear_probe"], "overall": {"auc_macro": 0.123}}
    html = report_of(run, baseline_metrics={"level": "lesion", "linear_probe": lesion_probe})
    scan_part, lesion_part = html.split("<h3>Lesion level</h3>", 1)
    zero_shot_scan = scan_part.split('id="zero-shot"', 1)[1]
    assert "linear probe" not in zero_shot_scan.split("<table>", 2)[1]
    assert '<th class="num">linear probe</th>' in lesion_part
    assert "linear probe AUC 0.123 (lesion level)" in headline_text(html)


def test_fold_summaries_show_mean_and_standard_error(run):
    folds = [run["retrieval_metrics"]["scan_level"]["model"]] * 2
    summary = mean_and_sem(folds)
    assert format_number(summary["overall"]["mrr"]) == (f"{folds[0]['overall']['mrr']:.3f} ± 0.000")
    html = report_of(run, retrieval_metrics={"scan_level": {"model": summary}})
    assert f"{folds[0]['overall']['mrr']:.3f} ± 0.000" in html
