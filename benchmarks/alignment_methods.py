"""The alignment methods compared on the phantom: the same budget per method.

For each method (clip, lit, partial freezing of half the image stages, flip, slip, coca) runs
the project's ``alignment`` pipeline with ``alignment.method`` (and the given steps), then the
``evaluation`` pipeline's embedding and metric nodes, in this project's data/ (after
``kedro run --pipeline demo_data``, ``data_engineering`` and ``pretraining``; each run writes
new versions of clip_model and the metrics). It prints, with the evaluation's patient-level
bootstrap intervals:

- scan-level zero-shot region AUC (macro) of the model and of its lesion-ablated control
  (the same scans with their lesions removed: what the model reads besides the lesion);
- lesion-level zero-shot region AUC (the paper's cubes) and its lesion-ablated control;
- lesion-level retrieval MRR of the region prompts;
- a linear probe's macro AUC on the frozen image embeddings (at the evaluation's primary
  level; its interval resamples test patients around the one fitted probe).

    python benchmarks/alignment_methods.py [--steps 300] [--methods clip,lit,...]
"""

from __future__ import annotations

import argparse
import platform

import numpy as np
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_runs import PROJECT, cell, metric_with_interval, run_pipelines, zero_shot_estimates

from mriclip.evaluation.baselines import linear_probe
from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.embedding import label_matrix
from mriclip.evaluation.embedding_tables import embedding_matrix, patient_ids, select_embeddings
from mriclip.models.encoders import build_image_encoder


def variants(params: dict) -> dict[str, dict]:
    """Name -> ``alignment`` parameter changes."""
    encoder = params["alignment"]["image_encoder"]
    stages = len(build_image_encoder(encoder["name"], **encoder["kwargs"]).stages())
    return {
        "clip": {"method": "clip"},
        "lit": {"method": "lit"},
        "half-frozen": {  # clip with the first half of the image stages frozen
            "method": "clip",
            "training": {"freeze_vision_stages": stages // 2},
        },
        "flip": {"method": "flip"},
        "slip": {"method": "slip"},
        "coca": {"method": "coca"},
    }


def probe_with_interval(catalog, params: dict, resamples: int) -> dict:
    """The evaluation's linear probe, fitted once; test patients resampled around it."""
    evaluation, regions, seed = params["evaluation"], params["regions"], params["seed"]
    level = evaluation["primary_level"]
    train = select_embeddings(catalog.load("train_embeddings"), level=level)
    test = select_embeddings(catalog.load("test_embeddings"), level=level)
    train_x, train_y = embedding_matrix(train, "image"), label_matrix(train["key"], regions)
    test_x, test_y = embedding_matrix(test, "image"), label_matrix(test["key"], regions)
    patients = test["scan_id"].map(patient_ids(catalog.load("scan_sentences")))

    def metric(indices: np.ndarray) -> dict:
        return linear_probe(
            train_x, train_y, test_x[indices], test_y[indices], regions,
            evaluation["probe_C"], seed,
        )["overall"]  # fmt: skip

    return with_bootstrap_intervals(
        metric, patients.tolist(), resamples, evaluation["bootstrap"]["confidence"], seed
    )


def run_variant(changes: dict, steps: int, probe_resamples: int) -> dict:
    training = {"steps": steps, "warmup_steps": max(1, steps // 10), **changes.get("training", {})}
    alignment = {**changes, "training": training}
    seconds, context = run_pipelines(
        ["alignment", "evaluation"], {"alignment": alignment}, tags=["gpu", "metrics"]
    )
    catalog, params = context.catalog, context.params
    retrieval = catalog.load("retrieval_metrics")
    probe = probe_with_interval(catalog, params, probe_resamples)
    return {
        **zero_shot_estimates(catalog.load("zero_shot_metrics")),
        "lesion MRR": metric_with_interval(retrieval, "lesion_level.model.overall.mrr"),
        "probe AUC": (probe["auc_macro"], probe["auc_macro_ci"]),
        "minutes": seconds / 60,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300, help="alignment steps per method")
    parser.add_argument("--methods", default=None, help="comma-separated subset of the names")
    parser.add_argument(
        "--probe-resamples", type=int, default=200, help="bootstrap resamples of the probe"
    )
    args = parser.parse_args()
    bootstrap_project(PROJECT)
    with KedroSession.create(project_path=PROJECT) as session:
        params = session.load_context().params
    chosen = variants(params)
    if args.methods:
        wanted = args.methods.split(",")
        unknown = set(wanted) - set(chosen)
        if unknown:
            raise SystemExit(f"unknown method(s) {sorted(unknown)}; choose from {list(chosen)}")
        chosen = {name: chosen[name] for name in wanted}
    batch = params["alignment"]["training"]["micro_batch_size"]
    frozen = variants(params)["half-frozen"]["training"]["freeze_vision_stages"]
    print(
        f"{args.steps} steps of {batch} cubes per method, seed {params['seed']}; "
        f"half-frozen: the first {frozen} image stages frozen; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    )
    columns = ["scan AUC", "scan AUC ablated", "lesion AUC", "lesion AUC ablated",
               "lesion MRR", "probe AUC"]  # fmt: skip
    print("| method | " + " | ".join(columns) + " | minutes |")
    print("|---" * (len(columns) + 2) + "|")
    for name, changes in chosen.items():
        result = run_variant(changes, args.steps, args.probe_resamples)
        cells = " | ".join(cell(result[column]) for column in columns)
        print(f"| {name} | {cells} | {result['minutes']:.1f} |", flush=True)


if __name__ == "__main__":
    main()
