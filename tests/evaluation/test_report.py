"""The HTML report: headline numbers, tables, problems, embedded figures, escaping, gaps."""

import base64
import io
import re

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from mriclip.evaluation.baselines import early_fusion_classifier, linear_probe
from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.modality_gap import zero_shot_gap_sweep
from mriclip.evaluation.plots import retrieval_grid, roc_curves, training_curves, tsne_before_after
from mriclip.evaluation.report import (
    PNG_SIGNATURE,
    figure_png,
    format_number,
    render_report,
)
from mriclip.evaluation.retrieval import (
    permutation_baseline,
    retrieval_metrics,
    retrieval_random_baseline,
)
from mriclip.evaluation.summary import mean_and_sem
from mriclip.evaluation.zero_shot import (
    evaluate_zero_shot,
    zero_shot_metrics,
    zero_shot_random_baseline,
    zero_shot_scores,
)
from tests.pipelines.helpers import load_parameters

REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]
HOSTILE_ID = "<b>x</b>"
N_TRAIN, N_TEST, DIM = 30, 20, 8


def png(figure: Figure) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=40)
    return buffer.getvalue()


def label_matrix(rng, n):
    """One or two regions per scan, every region present."""
    labels = np.zeros((n, len(REGIONS)), dtype=int)
    labels[np.arange(n), np.arange(n) % len(REGIONS)] = 1
    second = rng.random(n) < 0.3
    labels[second, rng.integers(0, len(REGIONS), second.sum())] = 1
    return labels


@pytest.fixture(scope="module")
def run():
    """Realistic report inputs made by the evaluation library on small synthetic embeddings."""
    rng = np.random.default_rng(0)
    prompts = rng.normal(size=(len(REGIONS), DIM))
    labels = label_matrix(rng, N_TRAIN + N_TEST)
    images = labels @ prompts + 1.5 * rng.normal(size=(len(labels), DIM))
    texts = labels @ prompts + 0.3 * rng.normal(size=images.shape) + 2.0  # offset: a gap
    train, test = slice(0, N_TRAIN), slice(N_TRAIN, None)
    test_images, test_labels = images[test], labels[test]

    scan_ids = [f"S{i:02d}" for i in range(len(labels))]
    patient_ids = [f"P{i // 2:02d}" for i in range(len(labels))]
    region_names = [";".join(np.array(REGIONS)[row.astype(bool)]) for row in labels]
    sentences = pd.DataFrame(
        {
            "scan_id": scan_ids,
            "patient_id": patient_ids,
            "regions": region_names,
            "n_lesions": labels.sum(axis=1),
            "stratum": [names.split(";")[0] for names in region_names],
            "sentence": [f"There is a lesion in the {names} section." for names in region_names],
            "age": rng.integers(30, 80, len(labels)),
            "sex": rng.choice(["female", "male"], len(labels)),
        }
    )
    splits = sentences[["scan_id", "patient_id", "stratum"]].assign(
        split=["train"] * N_TRAIN + ["test"] * N_TEST,
        fold=[i // 2 % 3 for i in range(N_TRAIN)] + [-1] * N_TEST,
    )
    lesions = pd.DataFrame(
        [
            {
                "scan_id": scan,
                "lesion_id": k + 1,
                "region": region,
                "center_x": 10.0,
                "center_y": 12.0,
                "center_z": 9.0,
                "n_voxels": 40,
            }
            for scan, names in zip(scan_ids, region_names, strict=True)
            for k, region in enumerate(names.split(";"))
        ]
    )
    nifti_catalog = pd.DataFrame(
        {
            "scan_id": [*scan_ids, HOSTILE_ID],
            "patient_id": [*patient_ids, "P99"],
            "status": ["ok"] * len(scan_ids) + ["truncated gzip stream"],
        }
    )
    problems = pd.DataFrame(
        [
            {
                "stage": "nifti_catalog",
                "scan_id": HOSTILE_ID,
                "item": "images/<b>x</b>.nii.gz",
                "problem": "truncated gzip stream",
                "fix": "re-export the scan",
            }
        ]
    )

    model = evaluate_zero_shot(test_images, prompts, test_labels, REGIONS)
    zero_shot = {
        "scan_level": {
            "model": model,
            "before_alignment": evaluate_zero_shot(
                rng.normal(size=test_images.shape), prompts, test_labels, REGIONS
            ),
            "random": zero_shot_random_baseline(test_labels, REGIONS),
            "gap_sweep": zero_shot_gap_sweep(
                images[train],
                texts[train],
                test_images,
                prompts,
                test_labels,
                REGIONS,
                lambdas=(-0.5, 0.0, 0.5, 1.0),
            ),
        },
        "lesion_level": {
            "model": evaluate_zero_shot(images, prompts, labels, REGIONS),
            "random": zero_shot_random_baseline(labels, REGIONS),
        },
    }
    retrieval = {
        level: {
            "model": retrieval_metrics(level_images, prompts, level_labels, REGIONS),
            "random": retrieval_random_baseline(level_labels, REGIONS),
            "shuffled": permutation_baseline(
                retrieval_metrics, level_images, prompts, level_labels, REGIONS, n_permutations=5
            ),
        }
        for level, level_images, level_labels in (
            ("scan_level", test_images, test_labels),
            ("lesion_level", images, labels),
        )
    }
    baselines = {
        "level": "scan",
        "linear_probe": linear_probe(
            images[train], labels[train], test_images, test_labels, REGIONS
        ),
        "early_fusion": early_fusion_classifier(
            images[train],
            texts[train],
            labels[train],
            test_images,
            texts[test],
            test_labels,
            REGIONS,
            epochs=2,
        ),
    }
    history = pd.DataFrame(
        {
            "step": np.arange(1, 11),
            "loss": np.linspace(2.0, 1.1, 10),
            "logit_scale": np.linspace(14.3, 16.0, 10),
            "samples_per_s": 12.0,
            "lr_vision": 1e-4,
            "lr_text": 1e-5,
            "lr_heads": 1e-4,
            "val_loss": [np.nan] * 4 + [1.7] + [np.nan] * 4 + [1.9],
            "val_auc_macro": [np.nan] * 4 + [0.61] + [np.nan] * 4 + [0.58],
        }
    ).assign(temperature=lambda frame: 1 / frame["logit_scale"])
    scores = zero_shot_scores(test_images, prompts)
    region_of_test = [REGIONS[i] for i in test_labels.argmax(axis=1)]
    reconstruction = Figure(figsize=(3, 2))
    reconstruction.subplots().imshow(rng.random((8, 8)), cmap="gray")
    figures = {
        "tsne": png(
            tsne_before_after(
                rng.normal(size=test_images.shape),
                texts[test],
                test_images,
                texts[test],
                region_of_test,
                regions=REGIONS,
                max_iter=250,
            )
        ),
        "roc": png(roc_curves(scores, test_labels, REGIONS)),
        "training_curves": png(training_curves(history)),
        "retrieval_grid": png(
            retrieval_grid(
                zero_shot_scores(test_images, prompts),
                REGIONS,
                lambda i: rng.random((6, 6)),
                top_k=2,
            )
        ),
        "reconstruction": png(reconstruction),
    }
    return {
        "nifti_catalog": nifti_catalog,
        "catalog_problems": problems,
        "scan_sentences": sentences,
        "splits": splits,
        "lesion_table": lesions,
        "zero_shot_metrics": zero_shot,
        "retrieval_metrics": retrieval,
        "baseline_metrics": baselines,
        "alignment_history": history,
        "pretraining_summary": {
            "reconstruction_loss": 0.4123,
            "unmasked_mean_loss": 0.9876,
            "beats_unmasked_mean": True,
            "n_train_volumes": N_TRAIN,
            "n_held_out_volumes": N_TEST,
        },
        "figures": figures,
        "parameters": load_parameters(),
        "run_metadata": {
            "save_version": "2026-01-02T03.04.05.678Z",
            "kedro_env": "local",
            "pipeline": "__default__",
            "versions": {"pretrained_encoder": "2026-01-01T00.00.00.000Z", "report": "this run"},
            "mriclip_version": "0.1.0",
            "device": "cpu (2 threads)",
        },
        "labels": test_labels,
        "images": test_images,
        "prompts": prompts,
    }


def report_of(run, **changes):
    inputs = {k: v for k, v in run.items() if k not in ("labels", "images", "prompts")}
    return render_report(**{**inputs, **changes})


def headline_text(html):
    return re.search(r'<p class="headline">(.*?)</p>', html).group(1)


def mean_reciprocal_rank(images, prompt, relevant):
    """Independent of the library: 1 / rank of the first relevant scan by cosine similarity."""
    images = images / np.linalg.norm(images, axis=1, keepdims=True)
    order = np.argsort(-(images @ (prompt / np.linalg.norm(prompt))))
    return 1.0 / (np.flatnonzero(relevant[order])[0] + 1)


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
        f"Scan-level zero-shot macro AUC {auc:.3f} (lesion-ablated n/a, random 0.500) · "
        "lesion detection AUC n/a (lesion-ablated n/a) · "
        f"retrieval MRR {mrr:.3f} (random {random_mrr:.3f}) · linear probe AUC {probe:.3f} "
        f"(scan level) · lesion-level (the paper&#39;s protocol) AUC {lesion:.3f} "
        "(lesion-ablated n/a)"
    )
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


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


def test_data_summary_lists_counts_and_escaped_problems(run):
    html = report_of(run)
    assert "<b>50</b><span>scans used</span>" in html
    assert "<b>25</b><span>patients</span>" in html
    assert f"<b>{len(run['lesion_table'])}</b><span>lesions</span>" in html
    assert '<td>test (held out)</td><td class="num">20</td><td class="num">10</td>' in html
    assert "truncated gzip stream" in html and "re-export the scan" in html
    assert "&lt;b&gt;x&lt;/b&gt;" in html
    assert HOSTILE_ID not in html


def test_every_figure_is_embedded_as_png(run):
    html = report_of(run)
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(embedded) == len(run["figures"]) == 5
    assert {base64.b64decode(data) for data in embedded} == set(run["figures"].values())


def test_settings_and_versions_are_shown(run):
    html = report_of(run)
    assert "<h3>alignment</h3>" in html and "init_temperature: 0.1" in html
    assert "<h3>data_engineering.preprocessing</h3>" in html
    assert "2026-01-01T00.00.00.000Z" in html and "cpu (2 threads)" in html
    assert "Catalog versions this report came from" in html


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


def test_an_empty_report_still_renders():
    html = render_report()
    assert "Scan-level zero-shot macro AUC n/a" in html
    assert "No split table in this run." in html
    assert "No alignment training history in this run." in html


def test_fold_summaries_show_mean_and_standard_error(run):
    folds = [run["retrieval_metrics"]["scan_level"]["model"]] * 2
    summary = mean_and_sem(folds)
    assert format_number(summary["overall"]["mrr"]) == (f"{folds[0]['overall']['mrr']:.3f} ± 0.000")
    html = report_of(run, retrieval_metrics={"scan_level": {"model": summary}})
    assert f"{folds[0]['overall']['mrr']:.3f} ± 0.000" in html


def test_figures_must_be_png_or_matplotlib():
    figure = Figure(figsize=(1, 1))
    assert figure_png(figure).startswith(PNG_SIGNATURE)
    with pytest.raises(ValueError, match="not a PNG"):
        figure_png(b"GIF89a")


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
