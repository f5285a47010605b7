"""The report's data section: counts of scans, patients, lesions, regions and splits, and every
item validation skipped."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mriclip.reporting.blocks import Block, absent, format_number, heading, is_missing, note, table
from mriclip.splits import in_split


def _region_list(text: Any) -> list[str]:
    if is_missing(text):
        return []
    return [region.strip() for region in str(text).split(";") if region.strip()]


def _region_counts(
    sentences: pd.DataFrame, lesions: pd.DataFrame, splits: pd.DataFrame, regions: Sequence[str]
) -> list[Block]:
    """Lesions per region (label maps / lesions.csv) and scans per region, by split."""
    if {"scan_id", "regions"} <= set(sentences.columns):
        scan_regions = (
            sentences[["scan_id"]]
            .assign(region=sentences["regions"].map(_region_list))
            .explode("region")
            .dropna(subset=["region"])
        )
    else:
        scan_regions = pd.DataFrame(columns=["scan_id", "region"])
    if {"scan_id", "split"} <= set(splits.columns):
        scan_regions["split"] = scan_regions["scan_id"].map(splits.set_index("scan_id")["split"])
    else:
        scan_regions["split"] = None
    lesion_counts = (
        lesions["region"].value_counts() if "region" in lesions else pd.Series(dtype=int)
    )
    names = list(dict.fromkeys([*regions, *lesion_counts.index, *scan_regions["region"]]))
    if not names:
        return []
    rows = []
    for region in names:
        in_region = scan_regions[scan_regions["region"] == region]
        rows.append(
            [
                region,
                int(lesion_counts.get(region, 0)),
                in_region["scan_id"].nunique(),
                len(in_split(in_region, "train")),
                len(in_split(in_region, "test")),
            ]
        )
    columns = ["region", "lesions", "scans", "train scans", "test scans"]
    blocks = [heading("Regions"), table(columns, rows, range(1, 5))]
    if "n_lesions" in sentences:
        blocks.append(note(f"{int((sentences['n_lesions'] == 0).sum())} scans without a lesion."))
    return blocks


def _split_sizes(splits: pd.DataFrame) -> list[Block]:
    blocks = [heading("Splits (by patient)")]
    if not {"split", "fold", "scan_id", "patient_id"} <= set(splits.columns):
        return blocks + [absent("No split table in this run.")]
    test = in_split(splits, "test")
    train = in_split(splits, "train")
    rows = [["test (held out)", len(test), test["patient_id"].nunique()]]
    for fold, part in train.groupby("fold", sort=True):
        rows.append([f"train, fold {fold}", len(part), part["patient_id"].nunique()])
    rows.append(["train, all folds", len(train), train["patient_id"].nunique()])
    return blocks + [table(["part", "scans", "patients"], rows, (1, 2))]


def _problems(catalog_problems: pd.DataFrame | None) -> list[Block]:
    blocks = [heading("Skipped items")]
    if catalog_problems is None:
        return blocks + [absent("The problems table is absent from this run.")]
    if catalog_problems.empty:
        return blocks + [note("No problems: every scan and table row passed validation.")]
    columns = [c for c in ("stage", "scan_id", "item", "problem", "fix") if c in catalog_problems]
    columns += [c for c in catalog_problems.columns if c not in columns]
    rows = catalog_problems[columns]
    return blocks + [table(columns, rows.astype(object).where(rows.notna(), "").values)]


def data_section(
    nifti_catalog: pd.DataFrame | None,
    catalog_problems: pd.DataFrame | None,
    scan_sentences: pd.DataFrame | None,
    splits: pd.DataFrame | None,
    lesion_table: pd.DataFrame | None,
    regions: Sequence[str] = (),
) -> list[Block]:
    """Counts of scans, patients, lesions, regions and splits, and every skipped item."""
    sentences = scan_sentences if scan_sentences is not None else pd.DataFrame()
    lesions = lesion_table if lesion_table is not None else pd.DataFrame()
    splits = splits if splits is not None else pd.DataFrame()
    facts = []
    if nifti_catalog is not None:
        facts.append(("scans found", len(nifti_catalog)))
    facts += [
        ("scans used", len(sentences)),
        ("patients", sentences["patient_id"].nunique() if "patient_id" in sentences else None),
        ("lesions", len(lesions) if lesion_table is not None else None),
    ]
    if "split" in splits:
        facts += [(f"{side} scans", len(in_split(splits, side))) for side in ("train", "test")]
    facts.append(("problems", len(catalog_problems) if catalog_problems is not None else None))
    cards = {"kind": "cards", "facts": [(label, format_number(v)) for label, v in facts]}
    return (
        [cards]
        + _region_counts(sentences, lesions, splits, regions)
        + _split_sizes(splits)
        + _problems(catalog_problems)
    )
