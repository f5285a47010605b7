"""Thin nodes of the inference pipeline; the work is in mriclip.inference."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import nibabel as nib
import pandas as pd
from tqdm.auto import tqdm

from mriclip.imaging.collection import load_channels, scan_source
from mriclip.imaging.validation import ProblemLog, build_unlabelled_catalog, image_file_name
from mriclip.inference import (
    build_scorer,
    inference_spec,
    predict_scan,
    prediction_row,
    rank_by_queries,
)
from mriclip.models.factory import load_clip_model
from mriclip.training.runtime import pick_device

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
    catalog, problems = build_unlabelled_catalog(inference_images, "skip", contract)
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
    """Scores, embeddings, query rankings and evidence maps of every readable new scan; a scan
    that fails is listed in the problems table and the others go on."""
    spec = inference_spec(clip_model)  # refuses a bundle it cannot reproduce, saying why
    scoring = evaluation["scan_scoring"]
    model = load_clip_model(clip_model).to(pick_device(params["device"]))
    scorer = build_scorer(model, spec.zero_shot, scoring, evaluation["prompts"])
    problems = ProblemLog("inference")
    rows, embeddings, patches, maps = [], [], {}, {}
    usable = inference_catalog[inference_catalog["status"] == "ok"]
    tick = time.perf_counter()
    for scan in tqdm(usable.itertuples(), total=len(usable), desc="inference", disable=None):
        try:
            image, channels = load_channels(scan_source(scan, inference_images))
            prediction = predict_scan(model, scorer, spec, image, channels, scoring)
        except Exception as error:  # noqa: BLE001 - one bad scan must not end the run
            problems.add(
                scan.scan_id,
                scan.image_file,
                f"inference failed: {type(error).__name__}: {error}",
                "inspect the scan; it may not be a head MRI or be mostly empty",
            )
            continue
        rows.append(prediction_row(scan.scan_id, prediction, spec.zero_shot, scoring["threshold"]))
        vector = {f"image_{i}": value for i, value in enumerate(prediction.embedding)}
        embeddings.append({"scan_id": scan.scan_id, **vector})
        patches[scan.scan_id] = prediction.patch_embeddings
        maps[f"{scan.scan_id}.nii.gz"] = nib.Nifti1Image(prediction.evidence, image.affine)
    elapsed = time.perf_counter() - tick
    logger.info(
        "inference: %d scans in %.1f s (%.2f scans/s)", len(rows), elapsed,
        len(rows) / elapsed if elapsed else float("nan"),
    )  # fmt: skip
    queries = rank_by_queries(model, params["queries"], patches, scoring["top_k"])
    all_problems = pd.concat([catalog_problems, problems.table()], ignore_index=True)
    return (
        pd.DataFrame(rows),
        pd.DataFrame(embeddings),
        queries,
        maps,
        all_problems,
    )
