"""How data_engineering preprocessing scales: memory with cohort size, throughput with
workers, and the cost of an unchanged re-run.

For each cohort size the phantom (conf/base demo_data parameters, ``n_patients`` set,
``n_scans: null``, no lesion-ablated twins) is written into a temporary project folder
through the catalog. Every measurement is a fresh Python process that runs the
data_engineering nodes up to ``preprocess_volumes`` on that folder, the catalog loading and
saving as in ``kedro run`` (volumes saved lazily), and reports its own peak resident memory.

(a) peak RSS of a ``workers: 1`` run (every scan in that one process) on the small and the
    large cohort, and their ratio (target <= 1.3x: memory independent of the scan count);
(b) scans/s of ``preprocess_volumes`` (with the saving of its outputs) at ``workers`` 1 and
    2 on the large cohort, and their ratio (target >= 1.7x on 2 cores);
(c) an unchanged re-run of (b)'s ``workers: 2`` run: its time as a fraction of the first
    (target <= 15%).

    python benchmarks/preprocessing_scaling.py [--patients 30 150] [--grid 96]

Needs a machine otherwise idle: other processes on the cores change (b) and (c).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def project_config() -> tuple[dict, dict]:
    """The catalog and parameters of conf/base (and conf/local), as ``kedro run`` reads them."""
    from kedro.config import OmegaConfigLoader

    from mriclip import settings

    loader = OmegaConfigLoader(str(PROJECT / "conf"), **settings.CONFIG_LOADER_ARGS)
    return loader["catalog"], loader["parameters"]


def write_phantom(root: Path, n_patients: int) -> int:
    """The phantom cohort in root/data/01_raw, written through the project's catalog."""
    from kedro.io import DataCatalog

    from mriclip.phantom import generate_cohort

    catalog_config, parameters = project_config()
    settings = {**parameters["demo_data"], "n_patients": n_patients, "n_scans": None}
    settings.pop("overwrite_existing")
    cohort = generate_cohort({**settings, "ablated_twins": False})
    os.chdir(root)
    catalog = DataCatalog.from_config(catalog_config)
    catalog.save("raw_images", cohort.images)
    catalog.save("raw_labels", cohort.labels)
    catalog.save("raw_scans", cohort.scans)
    catalog.save("raw_lesions", cohort.lesions)
    os.chdir(PROJECT)
    return len(cohort.scans)


def measure(root: Path, grid: int, workers: int) -> dict:
    """One run in this process (the child): times and peak memory, as a dict."""
    from kedro.io import DataCatalog

    from mriclip.pipelines.data_engineering import nodes

    catalog_config, parameters = project_config()
    params = parameters["data_engineering"]
    params["preprocessing"]["target_shape"] = [grid] * 3
    params["workers"] = workers
    os.chdir(root)
    catalog = DataCatalog.from_config(catalog_config)
    start = time.perf_counter()
    images, labels, scans, _ = nodes.select_input(
        catalog.load("raw_images"),
        catalog.load("raw_labels"),
        catalog.load("raw_scans"),
        catalog.load("bids_dataset"),
        params,
    )
    nifti_catalog, _ = nodes.catalog_scans(images, labels, scans, params)
    lesions, _ = nodes.validate_lesions(
        scans, catalog.load("raw_lesions"), nifti_catalog, parameters["regions"], params
    )
    validated = time.perf_counter()
    outputs = nodes.preprocess_volumes(
        images, labels, nifti_catalog, lesions, catalog.load("preprocessing_cache"), params
    )
    names = [
        "preprocessed_volumes",
        "preprocessed_labels",
        "preprocessing_report",
        "lesion_table",
        "preprocessing_problems",
    ]
    for name, data in zip(names, outputs, strict=True):
        catalog.save(name, data)
    done = time.perf_counter()
    kib = 1024  # VmHWM and ru_maxrss are in KiB on Linux
    return {
        "n_scans": len(outputs[2]),
        "catalog_seconds": validated - start,
        "preprocess_seconds": done - validated,
        "peak_rss_mib": own_peak_rss_kib() / kib,
        "peak_worker_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / kib,
    }


def own_peak_rss_kib() -> int:
    """This process's peak resident memory (VmHWM). Not ``ru_maxrss``: Linux carries the
    parent's peak over fork and exec into it, so every child reported the 3.6 GB of the
    process that had generated the 150-patient phantom."""
    status = Path("/proc/self/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("VmHWM")))


def run_child(root: Path, grid: int, workers: int, fresh: bool) -> dict:
    if fresh:
        shutil.rmtree(root / "data" / "02_intermediate" / "preprocessing_cache", ignore_errors=True)
    command = [sys.executable, __file__, "--child", str(root), "--grid", str(grid)]
    result = subprocess.run(
        [*command, "--workers", str(workers)], capture_output=True, text=True, check=False
    )
    if result.returncode:
        raise RuntimeError(f"measurement failed:\n{result.stderr[-4000:]}")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    print(
        f"  {root.name}, workers {workers}, {'fresh' if fresh else 'unchanged re-run'}: "
        f"{figures['n_scans']} scans, catalog {figures['catalog_seconds']:.1f} s, "
        f"preprocess {figures['preprocess_seconds']:.1f} s, "
        f"peak RSS {figures['peak_rss_mib']:.0f} MiB "
        f"(largest worker {figures['peak_worker_rss_mib']:.0f} MiB)",
        flush=True,
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--patients", type=int, nargs=2, default=[30, 150], metavar=("N1", "N2"))
    parser.add_argument("--grid", type=int, default=96, help="target_shape is grid^3")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--workers", type=int, help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.child:
        print(json.dumps(measure(arguments.child, arguments.grid, arguments.workers)))
        return

    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"CPU cores available: {cores}, load average {load:.1f}; grid {arguments.grid}^3")
    small_n, large_n = arguments.patients
    with tempfile.TemporaryDirectory(prefix="mriclip-scaling-") as folder:
        roots = {}
        for n_patients in (small_n, large_n):
            roots[n_patients] = Path(folder) / f"{n_patients}_patients"
            roots[n_patients].mkdir()
            start = time.perf_counter()
            n_scans = write_phantom(roots[n_patients], n_patients)
            print(
                f"phantom: {n_patients} patients, {n_scans} scans written in "
                f"{time.perf_counter() - start:.0f} s",
                flush=True,
            )
        small = run_child(roots[small_n], arguments.grid, 1, fresh=True)
        serial = run_child(roots[large_n], arguments.grid, 1, fresh=True)
        parallel = run_child(roots[large_n], arguments.grid, 2, fresh=True)
        rerun = run_child(roots[large_n], arguments.grid, 2, fresh=False)

    memory_ratio = serial["peak_rss_mib"] / small["peak_rss_mib"]
    speeds = [figures["n_scans"] / figures["preprocess_seconds"] for figures in (serial, parallel)]
    rerun_fraction = rerun["preprocess_seconds"] / parallel["preprocess_seconds"]
    with_catalog = (rerun["catalog_seconds"] + rerun["preprocess_seconds"]) / (
        parallel["catalog_seconds"] + parallel["preprocess_seconds"]
    )
    print(
        f"(a) peak RSS, workers 1: {small['peak_rss_mib']:.0f} MiB ({small['n_scans']} scans) "
        f"vs {serial['peak_rss_mib']:.0f} MiB ({serial['n_scans']} scans): "
        f"{memory_ratio:.2f}x (target <= 1.3x)"
    )
    print(
        f"(b) throughput: {speeds[0]:.2f} scans/s at workers 1, {speeds[1]:.2f} at workers 2: "
        f"{speeds[1] / speeds[0]:.2f}x (target >= 1.7x)"
    )
    print(
        f"(c) unchanged re-run: preprocess_volumes {rerun['preprocess_seconds']:.1f} s of "
        f"{parallel['preprocess_seconds']:.1f} s = {rerun_fraction:.1%} (target <= 15%); "
        f"with the catalog nodes, which validate every file again, {with_catalog:.1%}"
    )


if __name__ == "__main__":
    main()
