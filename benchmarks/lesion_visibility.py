"""Are the lesions still visible after preprocessing? A control for the difficulty study.

For each finished run folder (e.g. ``/tmp/mriclip-difficulty/contrast-0.5``), the maximum
intensity of a cube centred on each lesion of the first ``--scans`` preprocessed scans is
compared with that of cubes at random head positions that touch no lesion: the AUC of this
trivial detector says how much lesion signal the model's input holds, whatever the model
learns. Prints one line per folder.

    python benchmarks/lesion_visibility.py FOLDER [FOLDER ...] [--scans 80] [--size 16]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score


def cube_max(volume: np.ndarray, centre: np.ndarray, size: int) -> tuple[float, tuple]:
    start = np.clip(np.asarray(centre) - size // 2, 0, np.array(volume.shape) - size)
    window = tuple(slice(s, s + size) for s in start)
    return float(volume[window].max()), window


def visibility(folder: Path, n_scans: int, size: int, rng: np.random.Generator) -> tuple:
    cache = folder / "data/02_intermediate/preprocessing_cache"
    lesions = pd.read_csv(folder / "data/03_primary/lesion_table.csv")
    lesion_cubes, other_cubes = [], []
    for scan_id, rows in list(lesions.groupby("scan_id"))[:n_scans]:
        volume = np.load(cache / scan_id / "volume.npy")
        label = np.load(cache / scan_id / "label.npy")
        volume, label = (a[0] if a.ndim == 4 else a for a in (volume, label))
        for row in rows.itertuples():
            centre = np.round([row.center_x, row.center_y, row.center_z]).astype(int)
            lesion_cubes.append(cube_max(volume, centre, size)[0])
        head = np.argwhere(volume > np.percentile(volume, 60))
        for _ in range(2 * len(rows)):
            value, window = cube_max(volume, head[rng.integers(len(head))], size)
            if not label[window].any():
                other_cubes.append(value)
    truth = np.r_[np.ones(len(lesion_cubes)), np.zeros(len(other_cubes))]
    return len(lesion_cubes), len(other_cubes), roc_auc_score(truth, lesion_cubes + other_cubes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folders", type=Path, nargs="+")
    parser.add_argument("--scans", type=int, default=80)
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    for folder in args.folders:
        n_lesion, n_other, auc = visibility(folder, args.scans, args.size, rng)
        print(f"{folder}: {n_lesion} lesion cubes, {n_other} lesion-free head cubes, "
              f"max-intensity AUC {auc:.3f}")  # fmt: skip


if __name__ == "__main__":
    main()
