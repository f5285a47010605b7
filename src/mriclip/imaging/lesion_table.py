"""The lesions table: one ``scan_id, lesion_id, region`` row per lesion of a usable scan,
from lesions.csv or from a regions column of scans.csv; after preprocessing, each lesion's
centre and size on the target grid."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd

from mriclip.imaging.problems import ProblemLog, require_columns


def lesion_name(lesion, scan_id: str) -> str:
    """How messages name a lesion row (``lesion_id``, ``region``): by its label-map id when it
    has one, else by its region, since lesions from the regions column have no id."""
    if pd.isna(lesion.lesion_id):
        return f"{lesion.region} lesion of {scan_id}"
    return f"lesion {int(lesion.lesion_id)} ({lesion.region}) of {scan_id}"


def collect_lesions(
    scans: pd.DataFrame,
    lesions: pd.DataFrame,
    catalog: pd.DataFrame,
    regions: Sequence[str],
    columns: Mapping[str, str],
    on_invalid: str = "skip",
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lesions of usable scans as ``scan_id, lesion_id, region`` rows.

    Lesions come from ``lesions`` (one row per lesion, ``lesion_id`` = value in the label
    map) or, when that table is empty, from a ``;``-separated regions column of ``scans``
    (then ``lesion_id`` is empty). Regions outside the vocabulary are problems. With neither,
    the table is empty and the problems table notes it once: lesion information is optional
    (most public cohorts have none), and the run goes on with the clinical columns alone.
    """
    problems = ProblemLog("lesions")
    known = {region.lower() for region in regions}
    usable = set(catalog.loc[catalog["status"] == "ok", "scan_id"])
    scan_col, lesion_col, region_col = columns["scan_id"], columns["lesion_id"], columns["region"]

    if len(lesions):
        require_columns(lesions, [scan_col, lesion_col, region_col], "lesions table (lesions.csv)")
        table = pd.DataFrame(
            {
                "scan_id": lesions[scan_col].astype(str),
                "lesion_id": pd.to_numeric(lesions[lesion_col], errors="coerce"),
                "region": lesions[region_col].astype(str).str.strip().str.lower(),
                "source_row": [f"lesions.csv row {i + 2}" for i in range(len(lesions))],
            }
        )
        for _, bad in table[table["lesion_id"].isna()].iterrows():
            problems.add(
                bad["scan_id"],
                bad["source_row"],
                "lesion_id is not a number",
                "use the integer value of the lesion in the label map",
            )
        table = table.dropna(subset=["lesion_id"]).astype({"lesion_id": int})
    elif columns.get("regions") in scans.columns:
        records = []
        for i, (scan_id, cell) in enumerate(
            zip(scans[scan_col], scans[columns["regions"]], strict=True)
        ):
            for region in str(cell).split(";") if pd.notna(cell) else []:
                if region.strip():
                    records.append(
                        (str(scan_id), None, region.strip().lower(), f"scans.csv row {i + 2}")
                    )
        table = pd.DataFrame(records, columns=["scan_id", "lesion_id", "region", "source_row"])
    else:
        return _no_lesion_information(columns.get("regions"))
    unknown = ~table["region"].isin(known)
    for _, bad in table[unknown].iterrows():
        problems.add(
            bad["scan_id"],
            bad["source_row"],
            f"unknown region '{bad['region']}'",
            f"use one of {sorted(known)} or add it to the regions parameter",
        )
    orphan = ~table["scan_id"].isin(set(catalog["scan_id"]) | set(scans[scan_col].astype(str)))
    for _, bad in table[orphan].iterrows():
        problems.add(
            bad["scan_id"],
            bad["source_row"],
            "lesion of a scan that does not exist",
            "fix the scan_id or remove the row",
        )
    problems.raise_if_any(on_invalid)
    keep = ~unknown & ~orphan & table["scan_id"].isin(usable)
    return table.loc[keep, ["scan_id", "lesion_id", "region"]].reset_index(drop=True), (
        problems.table()
    )


def _no_lesion_information(regions_column: str | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The empty lesions table of a cohort without lesion information, and its one note."""
    note = ProblemLog("lesions")
    note.add(
        None,
        "lesions.csv",
        f"no lesion information (lesions.csv is empty or absent and scans.csv has no "
        f"'{regions_column}' column): sentences come from the clinical columns only; the "
        "regions target, lesion-level metrics, lesion detection and lesion-ablated controls "
        "are skipped",
        "none needed; to train on lesions, add lesions.csv (see README, data contract)",
    )
    return pd.DataFrame(columns=["scan_id", "lesion_id", "region"]), note.table()


#: A lesion's centre on the preprocessed grid (voxel coordinates).
CENTRE_COLUMNS = ["center_x", "center_y", "center_z"]
CENTRED_COLUMNS = ["scan_id", "lesion_id", "region", *CENTRE_COLUMNS, "n_voxels"]


def centred_lesion_table(
    records: Mapping[str, dict], lesions: pd.DataFrame, problems: ProblemLog
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The lesions of the preprocessed scans (``records``: scan id -> preprocessing record,
    whose ``lesions`` maps label-map id -> centre and voxel count) as
    :data:`CENTRED_COLUMNS` rows. A listed lesion missing from its label map is a problem
    (added to ``problems``); one without a label map or an id is only noted, in the returned
    table of "lesion_centres" problems, since volume mode does not need centres."""
    uncentred = ProblemLog("lesion_centres")
    lesions_of = dict(tuple(lesions.groupby("scan_id", sort=False)))
    rows = []
    for scan_id, record in records.items():
        scan_lesions = lesions_of.get(scan_id, lesions.iloc[:0])
        rows += _centred_lesions(scan_id, record["lesions"], scan_lesions, problems, uncentred)
    return pd.DataFrame(rows, columns=CENTRED_COLUMNS), uncentred.table()


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
