"""The ``mriclip`` console script: ``mriclip predict`` runs an exported model anywhere;
``mriclip run`` is ``kedro run`` inside the project. (Not ``cli.py``: Kedro would read a
project's ``cli`` module as its own commands.)

``mriclip predict --model DIR --images PATH [PATH ...] [--out predictions.csv]
[--evidence-maps DIR] [--queries TEXT ...] [--device auto] [--workers N]
[--scan-timeout-s SECONDS]`` needs no conf/ and no data/:
PATH is a NIfTI file, a DICOM series folder or a folder of either. It writes the columns of
``scan_predictions`` to ``--out``, the inputs it could not use (with the reason) to stderr
and to ``problems.csv`` beside ``--out``, the query ranking to ``queries.csv`` beside it
when ``--queries`` are given, and exits non-zero only when no scan could be predicted.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

PROBLEMS_FILE = "problems.csv"
QUERIES_FILE = "queries.csv"


def predict_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mriclip predict",
        description="Apply an exported mriclip model (kedro run --pipeline export) to scans.",
    )
    parser.add_argument("--model", required=True, type=Path, help="the export folder")
    parser.add_argument(
        "--images",
        required=True,
        nargs="+",
        type=Path,
        help="NIfTI files, DICOM series folders, or folders of either",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("predictions.csv"),
        help="the predictions table (default: predictions.csv)",
    )
    parser.add_argument(
        "--evidence-maps",
        type=Path,
        default=None,
        help="write <scan_id>.nii.gz evidence maps into this folder",
    )
    parser.add_argument(
        "--queries",
        nargs="+",
        default=[],
        help="free texts to rank the scans by (written to queries.csv)",
    )
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, mps ...")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="scans read and preprocessed at once, in processes of their own (default: 1)",
    )
    parser.add_argument(
        "--scan-timeout-s",
        type=float,
        default=None,
        help="end a scan's reading and preprocessing after this many seconds and list it "
        "in problems.csv (default: no limit)",
    )
    return parser


def predict(argv: Sequence[str]) -> int:
    """``mriclip predict``; returns the exit status."""
    args = predict_parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("mriclip.imaging.problems").setLevel(logging.ERROR)  # listed below
    from mriclip.predictor import Predictor

    print(f"mriclip predict: loading the model from {args.model}", file=sys.stderr)
    predictor = Predictor.from_export(args.model, args.device, args.scan_timeout_s, args.workers)
    result = predictor.run_paths(args.images, args.queries)
    out = args.out
    out.parent.mkdir(parents=True, exist_ok=True)
    result.predictions.to_csv(out, index=False)
    problems_path = out.parent / PROBLEMS_FILE
    result.problems.to_csv(problems_path, index=False)
    if args.queries:
        result.queries.to_csv(out.parent / QUERIES_FILE, index=False)
    if args.evidence_maps is not None:
        import nibabel as nib

        args.evidence_maps.mkdir(parents=True, exist_ok=True)
        for name, evidence in result.evidence_maps.items():
            nib.save(evidence(), args.evidence_maps / name)
    for problem in result.problems.itertuples():
        print(f"unusable: {problem.item}: {problem.problem} ({problem.fix})", file=sys.stderr)
    print(
        f"mriclip predict: {len(result.predictions)} scan(s) predicted -> {out}; "
        f"{len(result.problems)} problem(s) -> {problems_path}"
    )
    return 0 if len(result.predictions) else 1


def run(argv: Sequence[str]) -> int:
    """``mriclip run``: ``kedro run`` of the project in the current folder."""
    from mriclip.__main__ import main as kedro_run

    return kedro_run(args=list(argv), prog_name="mriclip run") or 0


COMMANDS = {"predict": predict, "run": run}


def main(argv: Sequence[str] | None = None) -> int:
    """``mriclip predict ...`` or ``mriclip run ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(
            "usage: mriclip predict --model DIR --images PATH [...]   (an exported model)\n"
            "       mriclip run [kedro run options]                  (inside the project)",
            file=sys.stderr,
        )
        return 0 if argv[:1] in (["-h"], ["--help"]) else 2
    return COMMANDS[argv[0]](argv[1:])


if __name__ == "__main__":
    sys.exit(main())
