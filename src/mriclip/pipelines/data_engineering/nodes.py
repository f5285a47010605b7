"""Thin nodes of the data_engineering pipeline; the work is in mriclip.imaging/text/splits."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict

import pandas as pd

from mriclip.imaging.bids import BidsRoot, read_bids
from mriclip.imaging.collection import Store, preprocess_catalog
from mriclip.imaging.lesion_table import collect_lesions, lesion_name
from mriclip.imaging.preprocessing import PreprocessingConfig
from mriclip.imaging.problems import PROBLEM_COLUMNS, ProblemLog
from mriclip.imaging.triage import require_enough_scans
from mriclip.imaging.twins import TwinSources, ablated_twins
from mriclip.imaging.validation import GridRule, build_nifti_catalog, require_file_layout
from mriclip.splits import minimum_patients, patient_level_splits
from mriclip.text.templates import SentenceTemplates, describe_scan, region_prompts
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
    # Lesions without a centre are listed but never stop a run: volume mode does not need them.
    uncentred = ProblemLog("lesion_centres")
    lesions_of = dict(tuple(validated_lesions.groupby("scan_id", sort=False)))
    no_lesions = validated_lesions.iloc[:0]
    reports, lesion_rows = [], []
    for scan_id, record in done.records.items():
        reports.append({"scan_id": scan_id, **record["report"]})
        scan_lesions = lesions_of.get(scan_id, no_lesions)
        lesion_rows += _centred_lesions(
            scan_id, record["lesions"], scan_lesions, problems, uncentred
        )
    problems.raise_if_any(params["on_invalid"])
    lesion_table = pd.DataFrame(
        lesion_rows,
        columns=["scan_id", "lesion_id", "region", "center_x", "center_y", "center_z", "n_voxels"],
    )
    logger.info("preprocessed %d scans to %s", len(done.records), tuple(config.target_shape))
    all_problems = pd.concat([problems.table(), uncentred.table()], ignore_index=True)
    return (
        done.loaders("volume"),
        done.loaders("label"),
        pd.DataFrame(reports),
        lesion_table,
        all_problems,
    )


def _centred_lesions(
    scan_id: str,
    geometry: dict[str, list] | None,
    scan_lesions: pd.DataFrame,
    problems: ProblemLog,
    uncentred: ProblemLog,
) -> list[dict]:
    """Lesion-table rows of one scan from its label map's ``geometry`` (lesion id -> centre
    and voxel count; None without a label map); lesions that cannot be placed are listed."""
    if geometry is None:
        for lesion in scan_lesions.itertuples():
            uncentred.add(
                scan_id,
                lesion_name(lesion, scan_id),
                "listed but the scan has no label map, so the lesion has no "
                "centre (its region still enters the scan's sentence)",
                "add labels/<scan_id>.nii.gz, or use alignment.mode: volume",
            )
        return []
    rows = []
    for lesion in scan_lesions.itertuples():
        if pd.isna(lesion.lesion_id):
            uncentred.add(
                scan_id,
                lesion_name(lesion, scan_id),
                "no lesion_id (regions column), so the lesion has no centre "
                "(its region still enters the scan's sentence)",
                "give lesions.csv rows with the label-map ids for patch mode",
            )
            continue
        if str(int(lesion.lesion_id)) not in geometry:
            problems.add(
                scan_id,
                lesion_name(lesion, scan_id),
                "lesion id absent from the label map after preprocessing (missing "
                "in the file, or smaller than one voxel on the target grid)",
                "check lesions.csv against the label map, or use a finer grid",
            )
            continue
        *centre, n_voxels = geometry[str(int(lesion.lesion_id))]
        rows.append(
            {
                "scan_id": scan_id,
                "lesion_id": int(lesion.lesion_id),
                "region": lesion.region,
                "center_x": centre[0],
                "center_y": centre[1],
                "center_z": centre[2],
                "n_voxels": n_voxels,
            }
        )
    return rows


def _ordered_regions(regions_of_scan: list[str], vocabulary: list[str]) -> list[str]:
    return sorted(regions_of_scan, key=vocabulary.index)


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
    scan_col, patient_col = params["columns"]["scan_id"], params["columns"]["patient_id"]
    usable = set(preprocessing_report["scan_id"])
    rows = raw_scans.assign(**{scan_col: raw_scans[scan_col].astype(str)})
    rows = rows[rows[scan_col].isin(usable)]
    lesions_by_scan = validated_lesions.groupby("scan_id")["region"].apply(list).to_dict()
    records = []
    for row in rows.to_dict("records"):
        lesion_regions = _ordered_regions(lesions_by_scan.get(row[scan_col], []), regions)
        unique = list(dict.fromkeys(lesion_regions))
        record = {
            "scan_id": row[scan_col],
            "patient_id": str(row[patient_col]),
            "regions": ";".join(unique),
            "lesion_regions": ";".join(lesion_regions),
            "n_lesions": len(lesion_regions),
            "stratum": max(unique, key=lesion_regions.count) if unique else "none",
            "sentence": describe_scan(row, lesion_regions, templates),
        }
        record.update({column: row.get(column) for column in templates.columns})
        records.append(record)
    return pd.DataFrame(records), region_prompts(regions, templates)


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
