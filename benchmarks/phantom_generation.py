"""Wall time of the phantom cohort: template loading, generation, and NIfTI encoding.

Prints the machine's load average too: other processes on the same cores slow it down.

Run from the project root (``python benchmarks/phantom_generation.py``); by default it times
the conf/base cohort (47 patients, 77 scans). Encoding is what the catalog's save adds on top
of the demo_data node: ``to_bytes`` plus gzip at the level conf/base/catalog.yml gives
``raw_images`` and ``raw_labels``.
"""

from __future__ import annotations

import argparse
import gzip
import math
import os
import time
from pathlib import Path

import yaml

from mriclip.phantom import PhantomConfig, generate_cohort, load_template_anatomy

CONF = Path(__file__).resolve().parents[1] / "conf" / "base"
PARAMETERS = CONF / "parameters_demo_data.yml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n-patients", type=int, help="override demo_data.n_patients")
    parser.add_argument("--n-scans", type=int, help="override demo_data.n_scans")
    parser.add_argument("--no-encode", action="store_true", help="skip the NIfTI encoding time")
    arguments = parser.parse_args()

    params = yaml.safe_load(PARAMETERS.read_text())["demo_data"]
    if arguments.n_patients is not None:
        params["n_patients"] = arguments.n_patients
    if arguments.n_scans is not None:
        params["n_scans"] = arguments.n_scans
    config = PhantomConfig.from_params(params)

    start = time.perf_counter()
    load_template_anatomy(float(config.template_spacing_mm))
    template_seconds = time.perf_counter() - start

    start, start_cpu = time.perf_counter(), time.process_time()
    cohort = generate_cohort(config)
    generation_seconds = time.perf_counter() - start
    # CPU time (all threads) tells contention apart: on a shared machine wall time grows.
    generation_cpu_seconds = time.process_time() - start_cpu
    n_scans = len(cohort.scans)
    voxels = sum(math.prod(image.shape[:3]) for image in cohort.images.values())

    cores, load = len(os.sched_getaffinity(0)), os.getloadavg()[0]
    print(f"CPU cores available:    {cores}, load average {load:.1f}")
    print(
        f"cohort:                 {config.n_patients} patients, {n_scans} scans, "
        f"{len(cohort.lesions)} lesions, {voxels / n_scans / 1e6:.2f} M voxels per scan"
    )
    print(f"template loading:       {template_seconds:6.1f} s (once per process)")
    print(
        f"generation:             {generation_seconds:6.1f} s "
        f"({generation_seconds / n_scans:.2f} s per scan; CPU {generation_cpu_seconds:.1f} s)"
    )
    if not arguments.no_encode:
        catalog = yaml.safe_load((CONF / "catalog.yml").read_text())
        levels = {
            name: catalog[name]["dataset"]["save_args"]["compresslevel"]
            for name in ("raw_images", "raw_labels")
        }
        start = time.perf_counter()
        encoded = sum(
            len(gzip.compress(image.to_bytes(), compresslevel=levels[name]))
            for name, images in (("raw_images", cohort.images), ("raw_labels", cohort.labels))
            for image in images.values()
        )
        encoding_seconds = time.perf_counter() - start
        print(
            f"NIfTI encoding + gzip:  {encoding_seconds:6.1f} s "
            f"({encoded / 1e6:.0f} MB at gzip level {levels['raw_images']}, what the catalog "
            "writes)"
        )
        total = template_seconds + generation_seconds + encoding_seconds
        print(f"total:                  {total:6.1f} s")


if __name__ == "__main__":
    main()
