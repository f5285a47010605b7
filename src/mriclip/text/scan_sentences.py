"""The scan table the alignment reads: one row per preprocessed scan with its canonical
sentence, its lesion regions (in the vocabulary's order) and the clinical columns the
templates name."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence

import pandas as pd

from mriclip.text.templates import SentenceTemplates, describe_scan


def scan_sentence_table(
    scans: pd.DataFrame,
    lesions: pd.DataFrame,
    usable: Collection[str],
    regions: Sequence[str],
    templates: SentenceTemplates,
    columns: Mapping[str, str],
) -> pd.DataFrame:
    """A row per scan of ``scans`` whose id is in ``usable``: ``scan_id``, ``patient_id``,
    ``regions`` (distinct, ``;``-joined), ``lesion_regions`` (one per lesion),
    ``n_lesions``, ``stratum`` (the region with most lesions, ``none`` without), ``sentence``
    and the templates' columns that ``scans`` has (``SentenceTemplates.for_cohort``: without
    lesion information, sentences say nothing of lesions). ``columns`` names the ``scan_id``
    and ``patient_id`` columns of ``scans``; ``lesions`` has ``scan_id`` and ``region``."""
    scan_col, patient_col = columns["scan_id"], columns["patient_id"]
    templates = templates.for_cohort(scans.columns, describes_lesions=len(lesions) > 0)
    rows = scans.assign(**{scan_col: scans[scan_col].astype(str)})
    rows = rows[rows[scan_col].isin(set(usable))]
    lesions_by_scan = lesions.groupby("scan_id")["region"].apply(list).to_dict()
    order = {region: index for index, region in enumerate(regions)}
    records = []
    for row in rows.to_dict("records"):
        lesion_regions = sorted(lesions_by_scan.get(row[scan_col], []), key=order.__getitem__)
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
    return pd.DataFrame(records)
