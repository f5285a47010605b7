"""Difficulty study: where the method stops working. The whole default chain on a
150-patient phantom at full, half and quarter lesion contrast (``demo_data.lesion_contrast``)
and with small lesions only (``demo_data.lesion_radius_mm``), each beside its lesion-ablated
control; same seed for all. Writes the table to docs/benchmarks.md (section "difficulty").

    python benchmarks/difficulty.py [--seed 42] [--patients 150] [--jobs 2]
                                    [--only "contrast 0.5,small (3-5 mm)"]
"""

from __future__ import annotations

import argparse
import re
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

#: Row name -> demo_data changes.
SETTINGS = {
    "contrast 1.0": {"lesion_contrast": 1.0},
    "contrast 0.5": {"lesion_contrast": 0.5},
    "contrast 0.25": {"lesion_contrast": 0.25},
    "small (3-5 mm)": {"lesion_radius_mm": [3.0, 5.0]},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--patients", type=int, default=150)
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--only", default="", help="comma-separated row names to run")
    parser.add_argument("--params", default="", help="more parameters for every run (a.b=1,...)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mriclip-difficulty"))
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument(
        "--reuse", action="store_true", help="read runs that finished in --work, run the rest"
    )
    args = parser.parse_args()

    chosen = [name for name in SETTINGS if not args.only or name in args.only.split(",")]
    runs = []
    for name in chosen:
        demo = {"seed": args.seed, "n_patients": args.patients, "n_scans": None, **SETTINGS[name]}
        folder = prepare(args.work / re.sub(r"[^a-z0-9.]+", "-", name).strip("-"), args.reuse)
        params = merged({"seed": args.seed, "demo_data": demo}, args.params)
        runs.append(ChainRun(name, folder, params))
    runs = run_all(runs, args.jobs, args.threads, args.reuse)

    rows, regions = collect(runs, args.work)
    text = "\n\n".join(
        [
            f"`python benchmarks/difficulty.py --seed {args.seed} --patients {args.patients}"
            + (f" --params {args.params}" if args.params else "")
            + "` "
            f"on {machine()}, {args.threads} thread(s) per run. Brackets: patient-level "
            "bootstrap 95% intervals.",
            markdown_table(rows, list(HEADLINE)).rsplit("\n| **mean", 1)[0],
            "Per region, scan level:",
            markdown_table(regions, list(PER_REGION)).rsplit("\n| **mean", 1)[0],
        ]
    )
    print(text)
    if not args.no_docs:
        replace_section("difficulty", text)


if __name__ == "__main__":
    main()
