"""The cost of an unchanged re-run of the whole data_engineering pipeline, as a user runs it.

In a fresh copy of the project (conf and src; an environment ``bench`` sets the cohort size
and the grid), the phantom is written by ``kedro run --pipeline demo_data`` (with its
lesion-ablated twins, as the default run has them), then ``kedro run --pipeline
data_engineering`` runs twice: from empty caches, and again with nothing changed. Each is a
fresh ``kedro run`` process timed whole (start-up, catalog validation, preprocessing, twins,
sentences, splits, saving), and its log's summary lines are shown.

    python benchmarks/data_engineering_rerun.py [--patients 150] [--grid 96] [--workers 2]

Target (issue 23): the unchanged re-run takes <= 15% of the first run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
SHOWN = ("preprocessing:", "lesion-ablated twins:", "nifti_catalog:", "Pipeline execution")


def copy_project(
    destination: Path, patients: int, grid: int, workers: int, source: Path = PROJECT
) -> None:
    """conf (without conf/local), pyproject.toml and src of the project at ``source``, with an
    environment ``bench`` of the cohort size, grid and workers."""
    shutil.copytree(source / "conf", destination / "conf", ignore=shutil.ignore_patterns("local"))
    (destination / "conf" / "local").mkdir()
    shutil.copy(source / "pyproject.toml", destination)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(source / "src", destination / "src", ignore=ignore)
    bench = destination / "conf" / "bench"
    bench.mkdir()
    (bench / "parameters_demo_data.yml").write_text(
        f"demo_data:\n  n_patients: {patients}\n  n_scans: null\n"
    )
    (bench / "parameters_data_engineering.yml").write_text(
        f"data_engineering:\n  workers: {workers}\n"
        f"  preprocessing:\n    target_shape: [{grid}, {grid}, {grid}]\n"
    )


def kedro_run(project: Path, pipeline: str) -> float:
    """Wall seconds of ``kedro run --env bench --pipeline PIPELINE`` in ``project``."""
    kedro = Path(sys.executable).with_name("kedro")
    start = time.perf_counter()
    result = subprocess.run(
        [str(kedro), "run", "--env", "bench", "--pipeline", pipeline],
        cwd=project,
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "PYTHONPATH": str(project / "src"), "DO_NOT_TRACK": "1"},
    )
    seconds = time.perf_counter() - start
    if result.returncode:
        raise RuntimeError(f"kedro run --pipeline {pipeline} failed:\n{result.stderr[-4000:]}")
    for line in (result.stdout + result.stderr).splitlines():
        if any(key in line for key in SHOWN):
            print("   ", " ".join(line.split()), flush=True)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--grid", type=int, default=96, help="target_shape is grid^3")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    parser.add_argument(
        "--project", type=Path, default=PROJECT, help="the checkout whose conf and src run"
    )
    arguments = parser.parse_args()
    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(
        f"CPU cores available: {cores}, load average {load:.1f}; {arguments.patients} patients, "
        f"grid {arguments.grid}^3, workers {arguments.workers}; {arguments.project}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mriclip-rerun-") as folder:
        project = arguments.keep or Path(folder)
        copy_project(
            project, arguments.patients, arguments.grid, arguments.workers, arguments.project
        )
        print(f"demo_data: {kedro_run(project, 'demo_data'):.0f} s", flush=True)
        n_scans = len(list((project / "data" / "01_raw" / "images").glob("*.nii*")))
        first = kedro_run(project, "data_engineering")
        print(f"data_engineering, first run ({n_scans} scans): {first:.1f} s", flush=True)
        again = kedro_run(project, "data_engineering")
        print(f"data_engineering, unchanged re-run: {again:.1f} s", flush=True)
    print(
        f"unchanged re-run / first run = {again / first:.1%} (target <= 15%); "
        f"load average now {os.getloadavg()[0]:.1f}"
    )


if __name__ == "__main__":
    main()
