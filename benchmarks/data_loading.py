"""Preprocessing throughput and the cost of reading a training volume.

Measured side by side in one run, on the phantom cohort written by the demo_data pipeline
(run `kedro run --pipeline demo_data` first) or on any folder in the data contract:

- preprocessing throughput: scans per second through `preprocess_scan` (MONAI reorient,
  resample, crop, resize/pad, z-normalisation), N4 off as in the default settings;
- loading one preprocessed volume memory-mapped (`MemmapArrayDataset`, then reading a 32^3
  training crop) versus decoding its `.nii.gz` with nibabel, on the CPU default grid (64^3)
  and the paper's grid (192^3), and a crop from a volume already opened.

    python benchmarks/data_loading.py [--raw data/01_raw] [--repeats 20]

Prints a markdown table for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import tempfile
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch
import yaml
from scipy import ndimage

from mriclip.datasets import MemmapArrayDataset, NiftiDataset
from mriclip.imaging.preprocessing import PreprocessingConfig, preprocess_scan
from mriclip.imaging.validation import as_3d
from mriclip.training.samples import VolumeSource, crop_with_padding


def median_seconds(function, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raw", default="data/01_raw")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--scans", type=int, default=20, help="scans to preprocess")
    args = parser.parse_args()
    files = sorted((Path(args.raw) / "images").glob("*.nii*"))[: args.scans]
    if not files:
        raise SystemExit(f"no NIfTI files in {args.raw}/images: run the demo_data pipeline")

    parameters = yaml.safe_load(Path("conf/base/parameters_data_engineering.yml").read_text())
    config = PreprocessingConfig(**parameters["data_engineering"]["preprocessing"])
    start = time.perf_counter()
    for path in files:
        image = NiftiDataset(filepath=str(path)).load()
        volume, _, _ = preprocess_scan(image, as_3d(image), None, config)
    preprocessing_s = time.perf_counter() - start

    print(
        f"machine: {platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch threads"
    )
    print("| measurement | value |\n|---|---|")
    shape = "x".join(map(str, volume.shape))
    print(
        f"| preprocessing throughput ({len(files)} phantom scans -> {shape}) | "
        f"{len(files) / preprocessing_s:.2f} scans/s |"
    )
    paper_grid = ndimage.zoom(volume, 192 / volume.shape[0], order=1).astype(np.float32)
    for grid in (volume, paper_grid):
        compare_loading(grid, args.repeats)


def compare_loading(volume: np.ndarray, repeats: int) -> None:
    """One volume stored both ways; decode vs memory-mapped open (+ crop), and a crop from a
    volume already opened (what the training samples do after the first access)."""
    side = volume.shape[0]
    with tempfile.TemporaryDirectory() as folder:
        array_path = Path(folder) / "volume.npy"
        MemmapArrayDataset(filepath=str(array_path)).save(volume)
        gz_path = Path(folder) / "volume.nii.gz"
        nib.save(nib.Nifti1Image(volume, np.eye(4)), gz_path)
        dataset = MemmapArrayDataset(filepath=str(array_path))
        start = (side // 2 - 16,) * 3
        opened = VolumeSource({"scan": dataset.load})

        decode = median_seconds(lambda: np.asarray(nib.load(gz_path).dataobj), repeats)
        open_crop = median_seconds(lambda: crop_with_padding(dataset.load(), start, 32), repeats)
        cached_crop = median_seconds(lambda: crop_with_padding(opened["scan"], start, 32), repeats)
    print(f"| {side}^3: decode the volume from .nii.gz (nibabel) | {decode * 1e3:.2f} ms |")
    print(
        f"| {side}^3: open memory-mapped + 32^3 training crop | {open_crop * 1e3:.3f} ms "
        f"({decode / open_crop:.0f}x faster) |"
    )
    print(
        f"| {side}^3: 32^3 crop from an opened memmap (training loop) | "
        f"{cached_crop * 1e3:.3f} ms ({decode / cached_crop:.0f}x faster) |"
    )


if __name__ == "__main__":
    main()
