"""Thin nodes of the data_engineering pipeline; the work is in mriclip.imaging/text/splits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

import pandas as pd

from mriclip.imaging.bids import BidsRoot, read_bids
from mriclip.imaging.collection import Store, preprocess_catalog
from mriclip.imaging.lesion_table import centred_lesion_table, collect_lesions
from mriclip.imaging.preprocessing import PreprocessingConfig
from mriclip.imaging.problems import PROBLEM_COLUMNS
from mriclip.imaging.triage import require_enough_scans
from mriclip.imaging.twins import TwinSources, ablated_twins
from mriclip.imaging.validation import GridRule, build_nifti_catalog, require_file_layout
from mriclip.splits import minimum_patients, patient_level_splits
from mriclip.text.scan_sentences import scan_sentence_table
from mriclip.text.templates import SentenceTemplates, region_prompts
from mriclip.training.samples import VolumeSource

logger = logging.getLogger(__name__)


def select_input(
    raw_images: dict[str, Callable],
    raw_labels: dict[str, Callable],
    raw_scans: pd.DataFrame,
    bids_dataset: BidsRoot,
    params: dict,
) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """The images, label maps and scans table of ``data_engineering.source``: the file
    layout in data/01_raw (``files``) or a BIDS dataset (``bids``), and the problems met."""
    if params["source"] == "bids":
        if params["sequences"] is not None:
            raise ValueError(
                "data_engineering.sequences reads images/<scan_id>_<sequence>.nii.gz of the "
                "files source; with source: bids set it to null (bids.suffix picks the image)"
            )
        found = read_bids(bids_dataset, params["bids"], params["columns"], params["on_invalid"])
        return found.images, found.labels, found.scans, found.problems
    if params["source"] != "files":
        raise ValueError(
            f"data_engineering.source must be 'files' or 'bids', got {params['source']!r}"
        )
    require_file_layout(raw_images, raw_scans)
    return raw_images, raw_labels, raw_scans, pd.DataFrame(columns=PROBLEM_COLUMNS)


def catalog_scans(
    raw_images: dict[str, Callable],
    raw_labels: dict[str, Callable],
    raw_scans: pd.DataFrame,
    params: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The validated catalog and its problems; the run stops here, with a summary, when the
    usable scans are too few for the splits (mriclip.imaging.triage)."""
    grid = GridRule(params["preprocessing"]["target_spacing"], params["min_extent_voxels"])
    catalog, problems = build_nifti_catalog(
        raw_images,
        raw_labels,
        raw_scans,
        params["columns"],
        params["on_invalid"],
        grid,
        params["sequences"],
        params["missing_sequences"],
        params["max_abs_intensity"],
    )
    splits = params["splits"]
    needed = minimum_patients(splits["test_fraction"], splits["n_folds"])
    scan_ids = set(raw_scans[params["columns"]["scan_id"]].astype(str)) if len(raw_scans) else set()
    require_enough_scans(
        catalog,
        problems,
        needed,
        f"the splits need at least {needed} (data_engineering.splits: test_fraction "
        f"{splits['test_fraction']}, n_folds {splits['n_folds']})",
        list(raw_images),
        scan_ids,
        params,
    )
    return catalog, problems


def validate_lesions(
    raw_scans: pd.DataFrame,
    raw_lesions: pd.DataFrame,
    nifti_catalog: pd.DataFrame,
    regions: list[str],
    params: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    return collect_lesions(
        raw_scans, raw_lesions, nifti_catalog, regions, params["columns"], params["on_invalid"]
    )


def preprocess_volumes(
    raw_images: dict[str, Callable],
    raw_labels: dict[str, Callable],
    nifti_catalog: pd.DataFrame,
    validated_lesions: pd.DataFrame,
    preprocessing_cache: Store,
    params: dict,
) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Preprocess every usable scan over ``workers`` processes (or the Dask cluster at
    ``dask_scheduler``), each within ``scan_timeout_s``, redoing only scans whose files or
    settings changed since the cache's run (mriclip.imaging.collection). Returns loaders of
    the volumes and label maps (saved lazily, one ``.npy`` each), the per-scan report, the
    lesion table on the new grid, and the problems met."""
    config = PreprocessingConfig(**params["preprocessing"])
    done, problems = preprocess_catalog(
        nifti_catalog,
        raw_images,
        raw_labels,
        config,
        preprocessing_cache,
        params["workers"],
        params["dask_scheduler"],
        params["scan_timeout_s"],
    )
    lesion_table, uncentred = centred_lesion_table(done.records, validated_lesions, problems)
    reports = [{"scan_id": scan_id, **record["report"]} for scan_id, record in done.records.items()]
    problems.raise_if_any(params["on_invalid"])
    logger.info("preprocessed %d scans to %s", len(done.records), tuple(config.target_shape))
    all_problems = pd.concat([problems.table(), uncentred], ignore_index=True)
    return (
        done.loaders("volume"),
        done.loaders("label"),
        pd.DataFrame(reports),
        lesion_table,
        all_problems,
    )


def template_sentences(
    raw_scans: pd.DataFrame,
    validated_lesions: pd.DataFrame,
    preprocessing_report: pd.DataFrame,
    regions: list[str],
    sentence_params: dict,
    params: dict,
) -> tuple[pd.DataFrame, dict[str, str]]:
    """The canonical sentence of each preprocessed scan, its region set, and the prompts."""
    templates = SentenceTemplates.from_params(sentence_params)
    sentences = scan_sentence_table(
        raw_scans,
        validated_lesions,
        set(preprocessing_report["scan_id"]),
        regions,
        templates,
        params["columns"],
    )
    return sentences, region_prompts(regions, templates)


def record_preprocessing_settings(params: dict) -> dict:
    """The settings the preprocessed volumes were made with, checked, for the model bundle:
    inference must bring new scans to exactly these."""
    return asdict(PreprocessingConfig(**params["preprocessing"]))


def record_sequence_settings(params: dict) -> dict:
    """The sequences the volumes stack as channels (null: one image per scan) and the rule for
    missing ones, for the model bundle: inference must read new scans by the same contract."""
    return {"sequences": params["sequences"], "missing_sequences": params["missing_sequences"]}


def make_lesion_ablated_twins(
    raw_images: dict[str, Callable],
    raw_ablated_images: dict[str, Callable],
    preprocessed_volumes: dict[str, Callable],
    preprocessed_labels: dict[str, Callable],
    preprocessing_report: pd.DataFrame,
    nifti_catalog: pd.DataFrame,
    splits: pd.DataFrame,
    preprocessing_cache: Store,
    lesion_ablated_cache: Store,
    params: dict,
) -> tuple[dict, pd.DataFrame]:
    """Lesion-ablated twins of the scans of ``params["ablation"]["splits"]`` for the controls
    (mriclip.imaging.twins): the raw twin (the phantom's exact counterfactual) through the
    scan's own preprocessing and registration transform where one exists, else the
    preprocessed scan with its labelled lesions inpainted; unchanged twins come from the
    cache. Scans with neither are listed in the report with the reason."""
    settings = params["ablation"]
    wanted = set(splits.loc[splits["split"].isin(settings["splits"]), "scan_id"])
    usable = nifti_catalog[
        (nifti_catalog["status"] == "ok") & nifti_catalog["scan_id"].isin(wanted)
    ]
    reports = preprocessing_report.set_index("scan_id").to_dict("index")
    sources = TwinSources(
        raw_images,
        raw_ablated_images,
        VolumeSource(preprocessed_volumes),
        VolumeSource(preprocessed_labels),
        reports,
        {
            scan_id: (preprocessing_cache.record(scan_id) or {}).get("fingerprint")
            for scan_id in usable["scan_id"]
        },
    )
    twins, rows = ablated_twins(
        list(usable.itertuples()),
        sources,
        settings,
        PreprocessingConfig(**params["preprocessing"]),
        lesion_ablated_cache,
    )
    report = pd.DataFrame(rows, columns=["scan_id", "method"])
    logger.info("lesion-ablated twins: %s", report["method"].value_counts().to_dict() or "none")
    return twins, report


def split_patients(scan_sentences: pd.DataFrame, seed: int, params: dict) -> pd.DataFrame:
    return patient_level_splits(scan_sentences, seed=seed, **params["splits"])


def gather_problems(*tables: pd.DataFrame) -> pd.DataFrame:
    """All problems of the run in one saved table (empty with headers when there were none)."""
    frames = [table for table in tables if len(table)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=PROBLEM_COLUMNS)
