"""Transfer study: a model trained on the default phantom, applied with
``kedro run --pipeline inference`` to scans of another anatomy and lesion look.

The new cohort (``TRANSFER_COHORT``) differs from the default in every way the phantom can
vary it: the Neuromorphometrics atlas defines its lobes (other borders than AAL's), every
head is reshaped and warped by one cohort-wide field (a template unlike the ICBM152
average), and its lesions look otherwise (fainter, thicker-cored rims, wider and darker
oedema, more irregular). Only images go to inference. Scores are read from
``scan_predictions`` and judged against the new cohort's lesions table: per-region and macro
AUC with patient-level bootstrap intervals, then the same for the cohort's lesion-ablated
twins (a score that stays up without the lesions reads something else). Writes the table to
docs/benchmarks.md (section "transfer").

    python benchmarks/transfer.py [--trained DIR] [--scans 50] [--params a.b=1,...]
        [--cohort atlas=aal,...]

Without ``--trained`` the default chain is run first in a copy of the project (``--work``);
``--params`` are given to that training run (e.g. a lever under test). ``--cohort`` changes
keys of the new cohort, so that one difference at a time can be put back to the default
phantom's (which of them the model fails on).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from chain_study import (
    REGIONS,
    ChainRun,
    cell,
    copy_project,
    kedro_run,
    latest_output,
    machine,
    merged,
    replace_section,
)

from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.zero_shot import zero_shot_metrics
from mriclip.phantom import generate_cohort

#: Another anatomy and lesion look (demo_data keys; the rest keep conf/base's values).
TRANSFER_COHORT = {
    "seed": 1234,
    "atlas": "neuromorphometrics",
    "anatomy_scale": [1.06, 0.95, 1.04],
    "anatomy_warp_mm": 4.0,
    "anatomy_warp_seed": 1,
    "enhancement": [1.35, 1.8],
    "necrosis_intensity": [0.35, 0.65],
    "necrotic_core_fraction": [0.4, 0.8],
    "edema_intensity": [0.6, 0.8],
    "edema_extent": [1.0, 2.0],
    "lesion_irregularity": 0.3,
    "ablated_twins": True,
}


def write_images(images: dict[str, nib.Nifti1Image], folder: Path) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for name, image in images.items():
        nib.save(image, folder / name)


def region_labels(scans: pd.DataFrame, lesions: pd.DataFrame) -> np.ndarray:
    present = lesions.groupby("scan_id")["region"].agg(set)
    return np.array(
        [[region in present.get(scan_id, set()) for region in REGIONS] for scan_id in scans]
    ).astype(int)


#: Lesion radius bins (mm) of the by-size table.
SIZE_BINS = (0.0, 4.5, 6.5, 9.0, float("inf"))


def by_lesion_size(predictions: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Each positive (scan, region) pair's rank against the region's negative scans (the share
    of negatives it scores above: its own AUC), averaged by the radius of the region's largest
    lesion in the scan: which lesions the region AUCs lose."""
    rows = []
    for region in REGIONS:
        largest = lesions[lesions["region"] == region].groupby("scan_id")["radius_mm"].max()
        largest = largest[largest.index.isin(predictions.index)]
        negatives = predictions.loc[~predictions.index.isin(largest.index), f"prob_{region}"]
        for scan_id, radius in largest.items():
            score = predictions.loc[scan_id, f"prob_{region}"]
            rank = (negatives < score).mean() + 0.5 * (negatives == score).mean()
            rows.append({"region": region, "radius_mm": radius, "rank": rank})
    table = pd.DataFrame(rows)
    table["size"] = pd.cut(table["radius_mm"], list(SIZE_BINS))
    return table.groupby("size", observed=False)["rank"].agg(["count", "mean"])


def size_label(size: pd.Interval) -> str:
    if size.right == float("inf"):
        return f"> {size.left:g} mm"
    return f"{size.left:g}–{size.right:g} mm"


def scored(
    predictions: pd.DataFrame, scans: pd.DataFrame, lesions: pd.DataFrame, seed: int
) -> dict:
    """Region AUCs (with intervals) of ``predictions`` (``scan_predictions`` by scan_id)."""
    kept = [scan for scan in scans["scan_id"] if scan in predictions.index]
    scores = predictions.loc[kept, [f"prob_{region}" for region in REGIONS]].to_numpy()
    labels = region_labels(pd.Series(kept), lesions)
    patients = scans.set_index("scan_id").loc[kept, "patient_id"].to_numpy()
    metrics = with_bootstrap_intervals(
        lambda i: zero_shot_metrics(scores[i], labels[i], list(REGIONS)), patients, seed=seed
    )
    return {**metrics, "n_predicted": len(kept), "n_scans": len(scans)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trained", type=Path, help="a project folder holding a clip_model")
    parser.add_argument("--scans", type=int, default=50, help="scans (one per patient)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--params", default="", help="parameters of the training and inference runs (a.b=1,...)"
    )
    parser.add_argument(
        "--cohort", default="", help="changes to the new cohort's demo_data keys (atlas=aal,...)"
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/mriclip-transfer"))
    parser.add_argument("--section", default="transfer", help="docs/benchmarks.md section")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    args = parser.parse_args()

    params = merged({}, args.params)
    settings = merged(TRANSFER_COHORT, args.cohort)
    args.work.mkdir(parents=True, exist_ok=True)
    project = args.trained
    if project is None:
        project = copy_project(args.work / "trained")
        training = kedro_run(ChainRun("default chain", project, params), args.threads)
        if training.returncode != 0:
            raise SystemExit(f"the training run failed: see {project}/default.log")

    cohort = generate_cohort({**settings, "n_patients": args.scans, "n_scans": args.scans})
    scans = cohort.scans[["scan_id", "patient_id"]]
    rows, predictions = {}, {}
    inputs = {"scans": cohort.images, "lesion-ablated twins": cohort.ablated_images}
    for name, images in inputs.items():
        write_images(images, project / "data" / "01_raw" / "inference" / "images")
        inference = ChainRun(f"inference on {name}", project, params, "inference")
        run = kedro_run(inference, args.threads)
        if run.returncode != 0:
            raise SystemExit(f"inference failed: see {project}/inference.log")
        saved = latest_output(project, "data/07_model_output/scan_predictions.csv")
        shutil.copy(saved, args.work / f"predictions_{name.replace(' ', '_')}.csv")
        predictions[name] = pd.read_csv(saved).set_index("scan_id")
        rows[name] = scored(predictions[name], scans, cohort.lesions, settings["seed"])
        rows[name]["seconds"] = run.seconds
    (args.work / "results.json").write_text(json.dumps(rows, indent=1, default=str))
    # The truth beside the predictions, for a look at single scans (which region a miss got).
    cohort.lesions.to_csv(args.work / "lesions.csv", index=False)

    header = "| inputs | scans | macro AUC | " + " | ".join(REGIONS) + " |"
    lines = [header, "|---" * (len(REGIONS) + 3) + "|"]
    for name, metrics in rows.items():
        overall, per_region = metrics["overall"], metrics["per_region"]
        regions = [
            cell(per_region[r]["auc"], per_region[r].get("auc_ci")) if r in per_region else "—"
            for r in REGIONS
        ]
        lines.append(
            f"| {name} | {metrics['n_predicted']}/{metrics['n_scans']} | "
            f"{cell(overall.get('auc_macro'), overall.get('auc_macro_ci'))} | "
            + " | ".join(regions)
            + " |"
        )
    sizes = by_lesion_size(predictions["scans"], cohort.lesions)
    size_lines = [
        "| largest lesion of the region (radius) | positive (scan, region) pairs | mean AUC "
        "against the region's negatives |",
        "|---|---|---|",
        *(
            f"| {size_label(size)} | {int(row['count'])} | {cell(row['mean'])} |"
            for size, row in sizes.iterrows()
        ),
    ]
    cohort_settings = ", ".join(f"{key}={value}" for key, value in settings.items())
    text = "\n\n".join(
        [
            f"`python benchmarks/transfer.py --scans {args.scans}"
            + (f" --params {args.params}" if args.params else "")
            + (f" --cohort {args.cohort}" if args.cohort else "")
            + f"` on {machine()}, {args.threads} thread(s). Model: the default chain"
            + (f" with {args.params}" if args.params else "")
            + f". New cohort (demo_data): {cohort_settings}. Brackets: patient-level "
            "bootstrap 95% intervals.",
            "\n".join(lines),
            "By lesion size, the scans above:",
            "\n".join(size_lines),
        ]
    )
    print(text)
    if not args.no_docs:
        replace_section(args.section, text)


if __name__ == "__main__":
    main()
