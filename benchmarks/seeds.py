"""Seed study: the whole default chain on a 150-patient phantom, once per seed.

Each seed seeds both the phantom (``demo_data.seed``) and everything after it (``seed``:
splits, initialisation, sampling), so every run is another cohort and another training. Each
runs in its own copy of the project (``--work``), ``--jobs`` at a time with ``--threads``
threads each. Prints and writes to docs/benchmarks.md (section "seeds"), per seed and as
mean ± sd: scan-level macro AUC with its patient-level bootstrap interval, its lesion-ablated
control, patch-level lesion detection and its control, the paper's lesion level and its
control, the scan-level expected calibration error, and per-region scan-level AUC with
intervals.

Each 150-patient run peaks at about 3.5 GB while its phantom is generated (the cohort is held
in memory): on 24 GiB, keep ``--jobs`` at 3 or fewer beside other work.

    python benchmarks/seeds.py [--seeds 42 7 1234] [--patients 150] [--jobs 2]
                               [--params alignment.training.steps=1200,...]
"""

from __future__ import annotations

import argparse
from pathlib import Path

from chain_study import (
    HEADLINE,
    PER_REGION,
    ChainRun,
    collect,
    machine,
    markdown_table,
    merged,
    prepare,
    replace_section,
    run_all,
)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1234])
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--params", default="", help="more --params for every run (a.b=1,...)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mriclip-seeds"))
    parser.add_argument("--section", default="seeds", help="docs/benchmarks.md section")
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument(
        "--reuse", action="store_true", help="read runs that finished in --work, run the rest"
    )
    args = parser.parse_args()

    runs = []
    for seed in args.seeds:
        params = {
            "seed": seed,
            "demo_data": {"seed": seed, "n_patients": args.patients, "n_scans": None},
        }
        params = merged(params, args.params)
        folder = prepare(args.work / f"seed-{seed}", args.reuse)
        runs.append(ChainRun(f"seed {seed}", folder, params))
    runs = run_all(runs, args.jobs, args.threads, args.reuse)

    rows, regions = collect(runs, args.work)
    seconds = ", ".join(
        f"{run.name} {run.seconds:.0f} s" for run in runs if run.seconds is not None
    )
    text = "\n\n".join(
        [
            f"`python benchmarks/seeds.py --seeds {' '.join(map(str, args.seeds))} "
            f"--patients {args.patients}"
            + (f" --params {args.params}" if args.params else "")
            + f"` on {machine()}, {args.threads} thread(s) per run, {args.jobs} at once "
            f"({seconds}). Brackets: patient-level bootstrap 95% intervals.",
            markdown_table(rows, list(HEADLINE)),
            "Per region, scan level:",
            markdown_table(regions, list(PER_REGION)),
        ]
    )
    print(text)
    if not args.no_docs:
        replace_section(args.section, text)


if __name__ == "__main__":
    main()
