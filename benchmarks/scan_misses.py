"""Why a region's scan-level AUC falls short: missed lesions and false alarms of a finished run.

For each run folder (a project copy after ``kedro run``, e.g. a seed study's run) and each
region, on the test split's original scans:

- **missed**: scans with a lesion in the region scored below the 90th percentile of the scans
  without one. For each of their lesions in the region, the patch with the most lesion
  evidence among those holding the lesion's centre: is the lesion seen (evidence above the
  95th percentile of patches touching no lesion voxel) and does that patch's most probable
  region name the lesion's own?
- **false alarms**: the ``--top`` scans without a lesion in the region that score highest for
  it. Their best patch for the region: does it touch another region's lesion (read from the
  preprocessed label maps), does it lie on the grid's edge, and at which corner does it sit (a
  corner that recurs across scans points at a place the model takes for a lesion)?

    python benchmarks/scan_misses.py FOLDER [FOLDER ...] [--top 8]
"""

from __future__ import annotations

import argparse
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from chain_study import latest_output
from sklearn.metrics import roc_auc_score

from mriclip.phantom import REGIONS


def aligned_originals(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[(frame["stage"] == "aligned") & (frame["variant"] == "original")]


def patch_lesions(label: np.ndarray, patch: pd.Series, size: int) -> set[int]:
    window = label[
        int(patch.x) : int(patch.x) + size,
        int(patch.y) : int(patch.y) + size,
        int(patch.z) : int(patch.z) + size,
    ]
    return set(np.unique(window).tolist()) - {0}


def holds(patches: pd.DataFrame, lesion: pd.Series, size: int) -> pd.DataFrame:
    inside = np.ones(len(patches), bool)
    for axis, centre in zip(
        "xyz", (lesion.center_x, lesion.center_y, lesion.center_z), strict=True
    ):
        inside &= (patches[axis] <= centre).to_numpy() & (centre < patches[axis] + size).to_numpy()
    return patches[inside]


def analyse(folder: Path, top: int) -> None:
    data = folder / "data"
    scans = aligned_originals(
        pd.read_parquet(latest_output(folder, "data/07_model_output/test_scan_scores.parquet"))
    ).set_index("scan_id")
    patches = aligned_originals(
        pd.read_parquet(latest_output(folder, "data/07_model_output/test_patch_scores.parquet"))
    )
    lesions = pd.read_csv(data / "03_primary/lesion_table.csv")
    lesions = lesions[lesions["scan_id"].isin(scans.index)]
    size = int(patches["patch_size"].iloc[0])
    cache = data / "02_intermediate/preprocessing_cache"
    labels = {}
    for scan_id in scans.index:
        label = np.load(cache / scan_id / "label.npy")
        labels[scan_id] = label[0] if label.ndim == 4 else label
    touched = [bool(patch_lesions(labels[p.scan_id], p, size)) for p in patches.itertuples()]
    lesion_free = patches.loc[~np.array(touched), "lesion_evidence"]
    seen_above = float(np.quantile(lesion_free, 0.95))
    shape = np.array(next(iter(labels.values())).shape)
    corners_all = patches[["x", "y", "z"]].to_numpy()
    edge_rate = float(np.mean(np.any((corners_all == 0) | (corners_all + size == shape), axis=1)))
    print(
        f"\n{folder} ({len(scans)} test scans, evidence seen above {seen_above:.3f}, "
        f"{edge_rate:.0%} of scored patches on the grid's edge)"
    )

    for region in REGIONS:
        own = lesions[lesions["region"] == region]
        positive = scans.index.isin(own["scan_id"])
        scores = scans[f"prob_{region}"].to_numpy()
        cut = np.quantile(scores[~positive], 0.9)
        missed = scans.index[positive & (scores < cut)]
        seen = voted = counted = 0
        for lesion in own[own["scan_id"].isin(missed)].itertuples():
            holding = holds(patches[patches["scan_id"] == lesion.scan_id], lesion, size)
            if holding.empty:
                continue
            best = holding.loc[holding["lesion_evidence"].idxmax()]
            counted += 1
            seen += best["lesion_evidence"] >= seen_above
            voted += max(REGIONS, key=lambda name: best[f"prob_{name}"]) == region
        alarms = scans.loc[~positive, f"prob_{region}"].nlargest(top)
        other, at_edge, corners = 0, 0, Counter()
        for scan_id in alarms.index:
            scan_patches = patches[patches["scan_id"] == scan_id]
            best = scan_patches.loc[scan_patches[f"prob_{region}"].idxmax()]
            other += bool(patch_lesions(labels[scan_id], best, size))
            corner = np.array([best.x, best.y, best.z], int)
            at_edge += bool(np.any(corner == 0) or np.any(corner + size == shape))
            corners[tuple(corner.tolist())] += 1
        recurring = {corner: n for corner, n in corners.items() if n > 1}
        print(
            f"  {region}: AUC {roc_auc_score(positive, scores):.3f}, {positive.sum()} positive; "
            f"missed {len(missed)} scans ({counted} lesions: seen {seen}, own region voted "
            f"{voted}); top {len(alarms)} false alarms: {other} touch another region's lesion, "
            f"{len(alarms) - other} touch none, {at_edge} at the grid's edge; recurring corners "
            f"{recurring or 'none'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--top", type=int, default=8, help="false alarms looked at per region")
    args = parser.parse_args()
    for folder in args.folders:
        analyse(folder, args.top)


if __name__ == "__main__":
    main()
