"""Lever study: what one change to the method does, over seeds.

A lever is a set of parameter changes. For each seed it is run from ``--from-nodes`` (default:
the alignment's training) on that seed's cohort, preprocessed volumes and pretrained encoder
from the seed study (``benchmarks/seeds.py``, its ``--work`` is ``--base`` here), so that
only what the lever changes differs from the seed study's rows, which are the baseline. A lever
that changes the preprocessing or the pretraining names an earlier node. Prints and writes to
docs/benchmarks.md (section "lever-<name>"): per seed and as mean ± sd, the seed study's
columns, and the change of each mean from the baseline's.

    python benchmarks/levers.py --name "intensity augmentation" \\
        --params alignment.augmentation.gamma_prob=0.5,alignment.augmentation.bias_field_prob=0.3 \\
        [--seeds 42 7 1234] [--base /tmp/mriclip-seeds] [--jobs 2]
"""

from __future__ import annotations

import argparse
import re
import shutil
import statistics
from pathlib import Path

from chain_study import (
    HEADLINE,
    PER_REGION,
    ChainRun,
    collect,
    copy_project,
    finished,
    machine,
    markdown_table,
    merged,
    replace_section,
    run_all,
    summary,
    zero_shot_metrics,
)
from omegaconf import OmegaConf


def lever_copy(base: Path, destination: Path) -> Path:
    """This project's conf and src with ``base``'s data: its raw data linked (read only), the
    rest copied (outputs are rewritten in place), less the base's metrics."""
    copy_project(destination)
    data = destination / "data"
    data.mkdir()
    for entry in sorted((base / "data").iterdir()):
        if entry.name == "01_raw":
            (data / entry.name).symlink_to(entry.resolve())
        elif entry.is_dir():  # without the base's metrics: they would mark the lever's run done
            ignore = shutil.ignore_patterns("zero_shot_metrics.json")
            shutil.copytree(entry, data / entry.name, symlinks=True, ignore=ignore)
    return destination


def mean_change(rows: dict, baseline: dict, column: str) -> str:
    def mean(table: dict) -> float | None:
        values = [row[column][0] for row in table.values() if row[column][0] is not None]
        return statistics.mean(values) if values else None

    lever, before = mean(rows), mean(baseline)
    return "—" if lever is None or before is None else f"{lever - before:+.3f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--name", required=True, help="the lever's name in the docs")
    parser.add_argument("--params", required=True, help="its parameter changes (a.b=1,...)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 7, 1234])
    parser.add_argument("--base", type=Path, default=Path("/tmp/mriclip-seeds"))
    parser.add_argument("--from-nodes", default="alignment.train_clip_model")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="threads per run")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mriclip-levers"))
    parser.add_argument("--no-docs", action="store_true", help="print only")
    parser.add_argument(
        "--reuse", action="store_true", help="read runs that finished in --work, run the rest"
    )
    args = parser.parse_args()

    slug = re.sub(r"[^a-z0-9.]+", "-", args.name.lower()).strip("-")
    runs, baseline = [], {}
    for seed in args.seeds:
        base = args.base / f"seed-{seed}"
        if not finished(base):
            raise SystemExit(f"{base} has no finished run: run benchmarks/seeds.py first")
        baseline[f"seed {seed}"] = summary(zero_shot_metrics(base), HEADLINE)
        params = merged(OmegaConf.load(base / "conf/study/parameters.yml"), args.params)
        folder = args.work / slug / f"seed-{seed}"
        if not (args.reuse and finished(folder)):
            lever_copy(base, folder)
        runs.append(ChainRun(f"seed {seed}", folder, params, from_nodes=args.from_nodes))
    runs = run_all(runs, args.jobs, args.threads, args.reuse)

    rows, regions = collect(runs, args.work / slug)
    changes = " | ".join(mean_change(rows, baseline, column) for column in HEADLINE)
    text = "\n\n".join(
        [
            f"**{args.name}** (`{args.params}`): `python benchmarks/levers.py --name "
            f'"{args.name}" --params {args.params} --seeds {" ".join(map(str, args.seeds))}'
            f" --from-nodes {args.from_nodes}` on {machine()}, {args.threads} thread(s) per "
            "run, on the seed study's cohorts, volumes and encoders. Brackets: patient-level "
            "bootstrap 95% intervals.",
            markdown_table(rows, list(HEADLINE))
            + f"\n| **change of the mean from the seed study** | {changes} |",
            "Per region, scan level:",
            markdown_table(regions, list(PER_REGION)),
        ]
    )
    print(text)
    if not args.no_docs:
        replace_section(f"lever-{slug}", text)


if __name__ == "__main__":
    main()
