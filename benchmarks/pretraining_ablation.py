"""The paper's Table 1 ablation on the current data: zero-shot AUC of alignment from each
image-encoder initialisation, with the same seed and the same alignment steps.

Initialisations (``--inits``, in the order given):

- ``pretrained``: the encoder the pretraining pipeline saved last (run it before);
- ``random``: random initialisation;
- ``mae``, ``brainmvp``: the script first runs the ``pretraining`` pipeline with
  ``pretraining.method`` set to it, then aligns from the encoder that run saved.

For each it runs the ``alignment`` pipeline and the ``evaluation`` pipeline's embedding and
metric nodes in this project's data/ (after ``demo_data`` and ``data_engineering`` in the same
env; each run writes new versions of the encoder, clip_model and the metrics), and prints a
markdown table with the evaluation's patient-level bootstrap 95% intervals:

- the pretraining's reconstruction MSE on the held-out volumes beside its baseline (copy the
  visible voxels, predict their mean for the masked ones); MAE and BrainMVP reconstruct
  different things (their own masks; BrainMVP one sequence from the others), so compare each
  with its own baseline, not with each other;
- scan-level and lesion-level zero-shot region AUC (macro), each beside its lesion-ablated
  control (the same test scans with their lesions removed);
- patch-level lesion detection AUC and its lesion-ablated control;
- wall minutes of the pretraining run and of alignment plus evaluation.

    python benchmarks/pretraining_ablation.py [--inits pretrained,random] [--env test]
    python benchmarks/pretraining_ablation.py --env multicontrast --inits random,mae,brainmvp \\
        --steps 600 --pretraining-steps 200 [--params seed=1,...]
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Mapping

import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project
from kedro_runs import (
    PROJECT,
    cell,
    dotted_params,
    merged,
    metric_with_interval,
    run_pipelines,
    zero_shot_estimates,
)

from mriclip.reporting.blocks import MISSING
from mriclip.training.pretraining import PRETRAINING_METHODS

INITS = ("pretrained", "random", *PRETRAINING_METHODS)
DETECTION_COLUMNS = {
    "detection AUC": "lesion_detection.model.auc",
    "detection AUC ablated": "lesion_detection.lesion_ablated.auc",
}
COLUMNS = [
    "pretraining MSE (baseline)",
    "scan AUC",
    "scan AUC ablated",
    "lesion AUC",
    "lesion AUC ablated",
    *DETECTION_COLUMNS,
    "pretraining min",
    "alignment + evaluation min",
]


def reconstruction_cell(summary: Mapping | None, init: str) -> str:
    """ "0.223 (0.279)": held-out reconstruction MSE and its unmasked-mean baseline; for the
    ``pretrained`` init prefixed with the method that encoder was pretrained with."""
    if not summary or "reconstruction_loss" not in summary:
        return MISSING
    losses = f"{summary['reconstruction_loss']:.3f} ({summary['unmasked_mean_loss']:.3f})"
    method = summary.get("method", "")  # summaries written before BrainMVP do not name it
    return f"{method} {losses}".strip() if init == "pretrained" else losses


def budget(args: argparse.Namespace) -> dict:
    """The step counts the arguments set, as parameter changes every run shares."""
    changes = {}
    if args.steps is not None:
        changes["alignment"] = {"training": {"steps": args.steps}}
    if args.pretraining_steps is not None:
        changes["pretraining"] = {"training": {"steps": args.pretraining_steps}}
    return changes


def run_init(init: str, args: argparse.Namespace, shared: dict) -> dict[str, str]:
    """One row: pretraining when ``init`` is a pretraining method, then alignment and
    evaluation from the resulting (or named) initialisation."""
    pretraining_minutes = None
    if init in PRETRAINING_METHODS:
        changes = merged(shared, {"pretraining": {"method": init}})
        seconds, _ = run_pipelines(["pretraining"], changes, env=args.env)
        pretraining_minutes = seconds / 60
    image_init = "random" if init == "random" else "pretrained"
    seconds, context = run_pipelines(
        ["alignment", "evaluation"],
        merged(shared, {"alignment": {"image_init": image_init}}),
        env=args.env,
        tags=["gpu", "metrics"],
    )
    catalog = context.catalog
    zero_shot = catalog.load("zero_shot_metrics")
    estimates = {
        **zero_shot_estimates(zero_shot),
        **{name: metric_with_interval(zero_shot, path) for name, path in DETECTION_COLUMNS.items()},
    }
    # The latest pretraining summary is the one of the encoder this alignment started from.
    summary = None if init == "random" else catalog.load("pretraining_summary")
    return {
        "pretraining MSE (baseline)": reconstruction_cell(summary, init),
        **{name: cell(estimate) for name, estimate in estimates.items()},
        "pretraining min": MISSING if pretraining_minutes is None else f"{pretraining_minutes:.1f}",
        "alignment + evaluation min": f"{seconds / 60:.1f}",
    }


def budget_line(env: str | None, shared: dict) -> str:
    """The settings every row shares, as the runs will see them."""
    with KedroSession.create(project_path=PROJECT, env=env, runtime_params=shared) as session:
        params = session.load_context().params
    alignment, pretraining = params["alignment"]["training"], params["pretraining"]["training"]
    return (
        f"env {env or 'base'}, seed {params['seed']}; alignment {alignment['steps']} steps "
        f"of {alignment['micro_batch_size']} cubes; pretraining (mae, brainmvp) "
        f"{pretraining['steps']} steps of {pretraining['batch_size']} crops; "
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--inits", default="pretrained,random", help=f"comma-separated, of {', '.join(INITS)}"
    )
    parser.add_argument("--env", default=None, help="Kedro env (e.g. multicontrast, test)")
    parser.add_argument("--steps", type=int, default=None, help="alignment steps (all inits)")
    parser.add_argument(
        "--pretraining-steps", type=int, default=None, help="pretraining steps (mae, brainmvp)"
    )
    parser.add_argument("--params", default="", help="more parameters, as kedro run --params")
    args = parser.parse_args()
    inits = args.inits.split(",")
    unknown = set(inits) - set(INITS)
    if unknown:
        raise SystemExit(f"unknown init(s) {sorted(unknown)}; choose from {list(INITS)}")
    # The script's step counts win over the same keys in --params.
    shared = merged(dotted_params(args.params), budget(args))
    bootstrap_project(PROJECT)
    print(budget_line(args.env, shared))
    print("| image encoder init | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for init in inits:
        row = run_init(init, args, shared)
        print(f"| {init} | " + " | ".join(row[column] for column in COLUMNS) + " |", flush=True)


if __name__ == "__main__":
    main()
