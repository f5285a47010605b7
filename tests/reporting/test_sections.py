"""The headline and the result sections: controls, intervals, detection, targets, pretraining."""

import copy

import numpy as np
from sklearn.metrics import roc_auc_score

from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.zero_shot import (
    zero_shot_metrics,
    zero_shot_scores,
)
from tests.reporting.helpers import REGIONS, headline_text, mean_reciprocal_rank, report_of


def test_headline_has_the_independently_computed_numbers(run):
    html = report_of(run)
    labels, images, prompts = run["labels"], run["images"], run["prompts"]
    # Cosine similarity: per-region AUC is unchanged by the prompt's norm, not by the image's.
    unit_images = images / np.linalg.norm(images, axis=1, keepdims=True)
    auc = np.mean(
        [roc_auc_score(labels[:, j], unit_images @ prompts[j]) for j in range(len(REGIONS))]
    )
    mrr = np.mean(
        [mean_reciprocal_rank(images, prompts[j], labels[:, j]) for j in range(len(REGIONS))]
    )
    random_mrr = run["retrieval_metrics"]["scan_level"]["random"]["overall"]["mrr"]
    probe = run["baseline_metrics"]["linear_probe"]["overall"]["auc_macro"]
    lesion = run["zero_shot_metrics"]["lesion_level"]["model"]["overall"]["auc_macro"]
    assert headline_text(html) == (
        f"Scan-level zero-shot macro AUC {auc:.3f} (lesion-ablated n/a, random 0.500), "
        "calibration error (ECE) n/a (uncalibrated n/a) · "
        "lesion detection AUC n/a (lesion-ablated n/a) · "
        f"retrieval MRR {mrr:.3f} (random {random_mrr:.3f}) · linear probe AUC {probe:.3f} "
        f"(scan level) · lesion-level (the paper&#39;s protocol) AUC {lesion:.3f} "
        "(lesion-ablated n/a)"
    )
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_controls_intervals_detection_and_targets_are_shown(run):
    labels, images, prompts = run["labels"], run["images"], run["prompts"]
    groups = [f"P{i // 2}" for i in range(len(labels))]
    scores = zero_shot_scores(images, prompts)
    model = with_bootstrap_intervals(
        lambda i: zero_shot_metrics(scores[i], labels[i], REGIONS), groups, 200, seed=0
    )
    shuffled = scores[np.random.default_rng(0).permutation(len(scores))]
    ablated = zero_shot_metrics(shuffled, labels, REGIONS)
    zero_shot = {
        "prompts": {"ensemble": True, "negative": False, "aggregation": "top_k_mean",
                    "top_k": 3, "stride": 16},
        "scan_level": {**run["zero_shot_metrics"]["scan_level"], "model": model,
                       "lesion_ablated": ablated},
        "lesion_detection": {
            "model": {"auc": 0.93, "auc_ci": [0.9, 0.96], "n_positive": 40, "n_negative": 80,
                      "n_excluded": 7},
            "lesion_ablated": {"auc": 0.51, "auc_ci": [0.45, 0.57], "n_positive": 40,
                               "n_negative": 80},
            "random": {"auc": 0.5},
        },
        "targets": {"diagnosis": {"model": zero_shot_metrics(scores[:, :2], labels[:, :2],
                                                            ["atrophy", "none"])}},
    }  # fmt: skip
    html = report_of(run, zero_shot_metrics=zero_shot)
    overall = model["overall"]
    low, high = overall["auc_macro_ci"]
    text = headline_text(html)
    assert text.startswith(
        f"Scan-level zero-shot macro AUC {overall['auc_macro']:.3f} [{low:.3f}, {high:.3f}] "
        f"(lesion-ablated {ablated['overall']['auc_macro']:.3f}, random 0.500)"
    )
    assert "lesion detection AUC 0.930 [0.900, 0.960] (lesion-ablated 0.510)" in text
    assert '<th class="num">lesion-ablated</th>' in html
    assert "Lesion detection (test patches)" in html and "(7 patches)" in html
    assert "Scan-level target: diagnosis" in html and "AUC — atrophy" in html
    assert "mean of the top 3" in html
    assert html.index('id="zero-shot"') < html.index('id="figures"') < html.index('id="settings"')


def test_a_pretraining_that_does_not_beat_its_baseline_is_flagged(run):
    summary = {
        **run["pretraining_summary"],
        "reconstruction_loss": 1.2,
        "beats_unmasked_mean": False,
    }
    html = report_of(run, pretraining_summary=summary)
    assert "does not beat the unmasked-mean baseline" in html
    no_held_out = {"n_train_volumes": 4, "n_held_out_volumes": 0}
    assert "there were no held-out volumes" in report_of(run, pretraining_summary=no_held_out)


def test_headline_gives_the_calibration_error_beside_the_uncalibrated_one(run):
    metrics = copy.deepcopy(run["zero_shot_metrics"])
    overall = metrics["scan_level"]["model"]["overall"]
    overall.update(ece=0.0412, ece_ci=[0.02, 0.07], ece_uncalibrated=0.1873)
    text = headline_text(report_of(run, zero_shot_metrics=metrics))
    assert "calibration error (ECE) 0.041 [0.020, 0.070]" in text
    assert "(uncalibrated 0.187)" in text
