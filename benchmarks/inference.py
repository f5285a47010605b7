"""Inference on new phantom scans of another seed, images only: do the predictions hold?

Needs a trained ``clip_model`` (e.g. after ``kedro run``). Writes ``--n-scans`` phantom scans of
``--seed`` (one per patient, so none shares anatomy with the training cohort's patients) into
``data/01_raw/inference/images/`` (nothing else: no labels, no table), runs
``kedro run --pipeline inference`` and scores the saved ``scan_predictions`` against the
phantom's own truth: scan-level macro AUC of ``prob_<region>`` (with a patient bootstrap 95%
interval), of ``prob_atrophy``, the throughput in scans per second and the peak memory. The
folder is emptied first, so the run sees these scans only.

    python benchmarks/inference.py [--n-scans 20] [--seed 1234] [-- extra kedro run args]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.zero_shot import zero_shot_metrics
from mriclip.phantom import REGIONS, PhantomConfig, generate_cohort

IMAGES = Path("data/01_raw/inference/images")
PREDICTIONS = Path("data/07_model_output/scan_predictions.csv")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-scans", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1234)
    args, kedro_args = parser.parse_known_args()

    cohort = generate_cohort(
        PhantomConfig(
            seed=args.seed, n_patients=args.n_scans, n_scans=args.n_scans,
            scans_per_patient=(1, 1), ablated_twins=False,
        )
    )  # fmt: skip
    shutil.rmtree(IMAGES, ignore_errors=True)
    IMAGES.mkdir(parents=True)
    for name, image in cohort.images.items():
        image.to_filename(IMAGES / name)

    start = time.perf_counter()
    run = subprocess.run(
        [sys.executable, "-m", "kedro", "run", "--pipeline", "inference", *kedro_args],
        check=True,
        capture_output=True,
        text=True,
        # Wide enough that rich's log handler does not wrap the throughput line mid-sentence.
        env={**os.environ, "COLUMNS": "250"},
    )
    wall = time.perf_counter() - start
    log = re.sub(r"\s+", " ", run.stdout + run.stderr)
    logged = re.search(r"inference: \d+ scans in ([\d.]+) s \(([\d.]+) scans/s\)", log)
    predictions = pd.read_csv(sorted(PREDICTIONS.iterdir())[-1] / PREDICTIONS.name)

    truth = cohort.scans.set_index("scan_id").loc[predictions["scan_id"]]
    lesions = cohort.lesions.groupby("scan_id")["region"].apply(set)
    labels = np.array(
        [[region in lesions.get(sid, set()) for region in REGIONS] for sid in truth.index], int
    )
    scores = predictions[[f"prob_{region}" for region in REGIONS]].to_numpy()
    regions = with_bootstrap_intervals(
        lambda i: zero_shot_metrics(scores[i], labels[i], list(REGIONS)),
        truth["patient_id"].to_numpy(),
        n_resamples=1000,
    )
    atrophy = (truth["diagnosis"] == "atrophy").to_numpy(int)
    diagnosis = with_bootstrap_intervals(
        lambda i: zero_shot_metrics(
            predictions[["prob_atrophy"]].to_numpy()[i], atrophy[i, None], ["atrophy"]
        ),
        truth["patient_id"].to_numpy(),
        n_resamples=1000,
    )
    in_range = predictions.filter(like="prob_").apply(lambda c: c.between(0, 1).all()).all()
    result = {
        "scans_written": len(cohort.images),
        "scans_predicted": len(predictions),
        "probabilities_in_0_1": bool(in_range),
        "region_auc_macro": regions["overall"]["auc_macro"],
        "region_auc_macro_ci": regions["overall"]["auc_macro_ci"],
        "per_region_auc": {r: m["auc"] for r, m in regions["per_region"].items()},
        "atrophy_auc": diagnosis["per_region"].get("atrophy", {}).get("auc"),
        "atrophy_auc_ci": diagnosis["per_region"].get("atrophy", {}).get("auc_ci"),
        "wall_s_kedro_run": round(wall, 1),
        "scans_per_s_in_the_node": float(logged.group(2)) if logged else None,
        "scans_per_s_including_startup": round(len(predictions) / wall, 3),
        # the largest resident set of the run's processes (the kedro run or a worker), in MiB
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    sys.exit(main())
