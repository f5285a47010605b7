"""A cohort without lesion information: the phantom with its lesion tables withheld (no
lesions.csv, no label maps, no lesion-ablated twins), through data_engineering, pretraining,
alignment and evaluation with the default configuration. The atrophy target must still be
learnt: prints its scan-level AUC with the patient-level bootstrap interval (acceptance:
AUC >= 0.80), the diagnosis retrieval and what the run skipped.

    OMP_NUM_THREADS=1 python benchmarks/no_lesions.py [--seed 42] [--patients 47]
                                                      [--params alignment.training.steps=600]
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from chain_study import ChainRun, kedro_run, machine, merged, prepare

#: What the phantom writes that a cohort without lesion information does not have.
WITHHELD = ("lesions.csv", "labels", "lesion_ablated")
PIPELINES = ("data_engineering", "pretraining", "alignment", "evaluation")


def latest(folder: Path, name: str) -> dict:
    """The newest version of a versioned JSON output of data/08_reporting."""
    versions = sorted((folder / "data/08_reporting" / f"{name}.json").glob("*/*.json"))
    return json.loads(versions[-1].read_text())


def interval(metrics: dict, key: str) -> str:
    ci = metrics.get(f"{key}_ci")
    bracket = f" [{ci[0]:.2f}, {ci[1]:.2f}]" if ci else ""
    return f"{metrics[key]:.2f}{bracket}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--patients", type=int, default=47)
    parser.add_argument("--threads", type=int, default=1, help="threads of the run")
    parser.add_argument("--params", default="", help="more parameters (a.b=1,...)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/mriclip-no-lesions"))
    args = parser.parse_args()

    folder = prepare(args.work, reuse=False)
    demo = {"seed": args.seed, "n_patients": args.patients, "n_scans": None}
    params = merged({"seed": args.seed, "demo_data": demo}, args.params)
    runs = [ChainRun("demo_data", folder, params, pipeline="demo_data")]
    kedro_run(runs[0], args.threads)
    raw = folder / "data/01_raw"
    for name in WITHHELD:
        path = raw / name
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()
    for pipeline in PIPELINES:
        run = kedro_run(ChainRun(pipeline, folder, params, pipeline=pipeline), args.threads)
        runs.append(run)
        if run.returncode:
            raise SystemExit(f"{pipeline} failed: see {folder}/{pipeline}.log")

    zero_shot, retrieval = latest(folder, "zero_shot_metrics"), latest(folder, "retrieval_metrics")
    diagnosis = zero_shot["targets"]["diagnosis"]
    atrophy = diagnosis["model"]["per_region"]["atrophy"]
    before = diagnosis.get("before_alignment", {}).get("per_region", {}).get("atrophy")
    ranking = retrieval.get("targets", {}).get("diagnosis", {})
    minutes = sum(run.seconds for run in runs) / 60
    lines = [
        f"`OMP_NUM_THREADS={args.threads} python benchmarks/no_lesions.py --seed {args.seed} "
        f"--patients {args.patients}" + (f" --params {args.params}" if args.params else "") + "`"
        f" on {machine()}; {minutes:.1f} min. Brackets: patient-level bootstrap 95% intervals.",
        f"withheld: {', '.join(WITHHELD)}",
        f"atrophy scan-level AUC: {interval(atrophy, 'auc')} (test scans: "
        f"{diagnosis['model']['counts']['n_samples']}, acceptance >= 0.80)",
        f"atrophy AUC before alignment: {interval(before, 'auc') if before else 'n/a'}; "
        "random 0.50",
    ]
    if ranking:
        lines.append(
            f"diagnosis retrieval MRR: {interval(ranking['model']['overall'], 'mrr')} "
            f"(random {ranking['random']['overall'].get('mrr', float('nan')):.2f})"
        )
    lines += [f"skipped {name}: {reason}" for name, reason in zero_shot.get("skipped", {}).items()]
    print("\n".join(lines))


if __name__ == "__main__":
    main()
