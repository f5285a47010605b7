"""Thin nodes of the inference pipeline; the work is in mriclip.predictor and mriclip.inference."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pandas as pd

from mriclip.imaging.file_index import image_file_name
from mriclip.imaging.problems import ProblemLog
from mriclip.imaging.validation import build_unlabelled_catalog
from mriclip.inference import inference_spec
from mriclip.predictor import Predictor

logger = logging.getLogger(__name__)


def catalog_new_scans(
    clip_model: dict,
    inference_images: dict[str, Callable],
    inference_scans: pd.DataFrame,
    params: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The same checks as for training scans, by the data contract the model was trained
    with (any NIfTI file a scan, or ``<scan_id>_<sequence>.nii.gz`` per sequence of its
    bundle); an optional scans table adds ids' clinical columns, and its rows without an
    image are listed."""
    contract = inference_spec(clip_model).sequences  # refuses a bundle it cannot reproduce
    catalog, problems = build_unlabelled_catalog(
        inference_images, "skip", contract, params["max_abs_intensity"]
    )
    scan_col = params["columns"]["scan_id"]
    extra = ProblemLog("inference_catalog")
    if len(inference_scans):
        if scan_col not in inference_scans.columns:
            raise ValueError(
                f"data/01_raw/inference/scans.csv has no '{scan_col}' column (it has "
                f"{list(inference_scans.columns)}); name the id column as "
                "data_engineering.columns.scan_id says"
            )
        table = inference_scans.assign(scan_id=inference_scans[scan_col].astype(str))
        for scan_id in sorted(set(table["scan_id"]) - set(catalog["scan_id"])):
            files = contract.files(scan_id) if contract else [image_file_name(scan_id, None)]
            extra.add(scan_id, f"scans.csv scan_id '{scan_id}'", "row has no image file",
                      "add " + ", ".join(f"images/{file}" for file in files)
                      + " or remove the row")  # fmt: skip
        clinical = table.drop(columns=[c for c in table.columns if c in catalog.columns
                                       and c != "scan_id"])  # fmt: skip
        catalog = catalog.merge(clinical, on="scan_id", how="left")
    logger.info(
        "inference: %d of %d new scans readable", (catalog["status"] == "ok").sum(), len(catalog)
    )
    return catalog, pd.concat([problems, extra.table()], ignore_index=True)


def predict_new_scans(
    clip_model: dict,
    inference_images: dict[str, Callable],
    inference_catalog: pd.DataFrame,
    catalog_problems: pd.DataFrame,
    params: dict,
    evaluation: dict,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, dict, pd.DataFrame]:
    """Scores, embeddings, query rankings and evidence maps of every readable new scan, by
    the same ``Predictor`` as ``mriclip predict``; a scan that fails, or whose preprocessing
    outlasts ``scan_timeout_s``, is listed in the problems table and the others go on."""
    scoring = {"scan_scoring": evaluation["scan_scoring"], "prompts": evaluation["prompts"]}
    predictor = Predictor.from_bundle(
        clip_model, scoring, params["device"], params["scan_timeout_s"], params["workers"]
    )
    result = predictor.run(inference_images, inference_catalog, params["queries"])
    problems = pd.concat([catalog_problems, result.problems], ignore_index=True)
    return result.predictions, result.embeddings, result.queries, result.evidence_maps, problems
