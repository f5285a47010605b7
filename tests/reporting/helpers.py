"""Realistic report inputs made by the evaluation library on small synthetic embeddings, and
helpers to read the rendered HTML."""

import io
import re

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mriclip.evaluation.baselines import fusion_classifier, linear_probe
from mriclip.evaluation.modality_gap import zero_shot_gap_sweep
from mriclip.evaluation.plots import retrieval_grid, roc_curves, training_curves, tsne_before_after
from mriclip.evaluation.retrieval import (
    permutation_baseline,
    retrieval_metrics,
    retrieval_random_baseline,
)
from mriclip.evaluation.zero_shot import (
    evaluate_zero_shot,
    zero_shot_random_baseline,
    zero_shot_scores,
)
from mriclip.reporting.render import render_report
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


def report_inputs() -> dict:
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
        "early_fusion": fusion_classifier(
            "early_fusion",
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
