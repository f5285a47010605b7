"""Scan scoring choices on a transfer cohort: patch stride and aggregation, one model.

Each new scan is read, preprocessed and embedded once per stride; its patches' region
probabilities are then aggregated every way ``mriclip.evaluation.scan_scoring`` offers, and
each way's region AUCs are scored against the cohort's lesions as ``benchmarks/transfer.py``
scores its runs (patient-level bootstrap intervals). The cohort is transfer.py's too
(``--cohort`` changes its keys), so the figures say whether a scoring choice would lift
transfer, read on the cohort itself: a default chosen from them would be tuned on the figures
it is judged by.

    python benchmarks/scan_scoring.py --trained DIR [--scans 50] [--cohort seed=2026]
        [--strides 8 4] [--top-k 2 3 5 8]
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from transfer import REGIONS, TRANSFER_COHORT, merged, scored, write_images

from mriclip import Predictor
from mriclip.evaluation.embedding import embed_patches, scan_patches
from mriclip.evaluation.scan_scoring import aggregate_patches
from mriclip.imaging.collection import scan_source
from mriclip.inference import prepare_scan
from mriclip.phantom import generate_cohort


def trained_predictor(project: Path) -> Predictor:
    bootstrap_project(project)
    with KedroSession.create(project_path=project) as session:
        context = session.load_context()
        bundle, scoring = context.catalog.load("clip_model"), context.params["evaluation"]
    return Predictor.from_bundle(bundle, scoring)


def region_probabilities(predictor: Predictor, volume: np.ndarray, stride: int) -> np.ndarray:
    """(patches, regions) probabilities of a prepared scan's patches at ``stride``."""
    scoring, size = predictor.scan_scoring, predictor.spec.patch_size
    starts = scan_patches(volume, size, stride, scoring["min_foreground_fraction"])
    embeddings = embed_patches(
        predictor.model, volume, starts, size, scoring["batch_size"], scoring["mixed_precision_cpu"]
    )
    probabilities, _ = predictor.scorer.patch_probabilities(embeddings)
    return probabilities[next(iter(predictor.spec.zero_shot["targets"]))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trained", type=Path, required=True, help="a project with a clip_model")
    parser.add_argument("--scans", type=int, default=50, help="scans (one per patient)")
    parser.add_argument("--cohort", default="", help="changes to transfer.py's cohort keys")
    parser.add_argument("--strides", type=int, nargs="+", default=[8, 4])
    parser.add_argument("--top-k", type=int, nargs="+", default=[2, 3, 5, 8])
    parser.add_argument("--work", type=Path, default=Path("/tmp/mriclip-scan-scoring"))
    args = parser.parse_args()

    settings = merged(TRANSFER_COHORT, args.cohort)
    cohort = generate_cohort({**settings, "n_patients": args.scans, "n_scans": args.scans})
    folder = args.work / "images"
    write_images(cohort.images, folder)
    images = {path.name: functools.partial(nib.load, path) for path in folder.iterdir()}
    predictor = trained_predictor(args.trained.resolve())
    catalog, problems = predictor.catalog(images)
    if len(problems):
        raise SystemExit(f"unusable scans: {problems.to_dict('records')}")

    patches: dict[int, dict[str, np.ndarray]] = {stride: {} for stride in args.strides}
    seconds = dict.fromkeys(args.strides, 0.0)
    for scan in catalog.itertuples():
        volume = prepare_scan((scan_source(scan, images), predictor.spec.preprocessing)).volume
        for stride in args.strides:
            tick = time.perf_counter()
            patches[stride][scan.scan_id] = region_probabilities(predictor, volume, stride)
            seconds[stride] += time.perf_counter() - tick

    target = next(iter(predictor.spec.zero_shot["targets"].values()))
    columns = [f"prob_{region}" for region in target["classes"]]
    ways = [("max", 1), *(("top_k_mean", k) for k in args.top_k), ("noisy_or", 1), ("mean", 1)]
    print(f"| stride | aggregation | macro AUC | {' | '.join(REGIONS)} |")
    print("|---" * (len(REGIONS) + 3) + "|")
    for stride in args.strides:
        for method, k in ways:
            predictions = pd.DataFrame.from_dict(
                {scan_id: aggregate_patches(probabilities, method, k)
                 for scan_id, probabilities in patches[stride].items()},
                orient="index", columns=columns,
            )  # fmt: skip
            metrics = scored(predictions, cohort.scans, cohort.lesions, settings["seed"])
            low, high = metrics["overall"]["auc_macro_ci"]
            name = f"top_k_mean, k={k}" if method == "top_k_mean" else method
            per_region = metrics["per_region"]  # a region without positive scans has none
            regions = " | ".join(
                f"{per_region[r]['auc']:.3f}" if r in per_region else "—" for r in REGIONS
            )
            print(
                f"| {stride} | {name} | {metrics['overall']['auc_macro']:.3f} "
                f"[{low:.2f}, {high:.2f}] | {regions} |"
            )
    for stride in args.strides:
        print(f"stride {stride}: patch scoring {seconds[stride] / len(catalog):.2f} s a scan")


if __name__ == "__main__":
    main()
