"""When too few scans survive validation: stop at the catalog, and say why in one summary.

Without this, a cohort whose every scan was rejected (a multi-sequence folder read without
``data_engineering.sequences``, a BIDS tree in the images folder) ran on and died in a later
node with an unrelated error. The summary counts what was read and what is usable, groups the
problems (the commonest first, each with its fix), and recognises file-name patterns that one
setting reads: ``<scan_id>_<sequence>.nii.gz``, BIDS entities, DICOM series.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Collection, Mapping, Sequence

import pandas as pd

from mriclip.imaging.file_index import scan_id_from_filename

#: Sequence names in the order a stack usually takes (the first is the reference: grid, label).
_USUAL_ORDER = ("t1", "t1w", "t1ce", "t1gd", "t1c", "t2", "t2w", "flair", "pd", "dwi", "adc")
_BIDS_NAME = re.compile(
    r"(^|/)sub-[A-Za-z0-9]+(_ses-[A-Za-z0-9]+)?(_[a-z]+-[A-Za-z0-9]+)*_([A-Za-z0-9]+)\.nii"
)
_DICOM_SUFFIXES = (".dcm", ".ima", ".dicom")
_SHOWN_GROUPS = 5


class TooFewScansError(ValueError):
    """Too few scans (or patients) survived validation for the run to go on."""


def sequence_of(file_stem: str, scan_ids: Collection[str]) -> tuple[str, str] | None:
    """``(scan_id, sequence)`` when ``file_stem`` is ``<scan_id>_<sequence>`` of a scan id of
    the table, else None."""
    scan_id, _, sequence = file_stem.rpartition("_")
    return (scan_id, sequence) if scan_id in scan_ids and sequence else None


def sequence_setting(sequences: Sequence[str]) -> str:
    """How to set ``data_engineering.sequences`` to ``sequences``, in the usual stack order."""
    known = [name for name in _USUAL_ORDER if name in {s.lower() for s in sequences}]
    ordered = [s for k in known for s in sequences if s.lower() == k]
    ordered += sorted(s for s in sequences if s not in ordered)
    return (
        f"data_engineering.sequences: [{', '.join(ordered)}] (the first is each scan's "
        "reference: its grid and label map), in conf/local/parameters_data_engineering.yml or "
        "an environment's (--params cannot carry a list)"
    )


def no_row_fix(file_stem: str, scan_ids: Collection[str]) -> str:
    """The fix for an image without a scans.csv row: add the row, unless the file is one
    sequence of a scan the table has, which a setting reads."""
    match = sequence_of(file_stem, scan_ids)
    if match is None:
        return f"add a row with scan_id '{file_stem}' to scans.csv"
    scan_id, sequence = match
    return (
        f"the file looks like sequence '{sequence}' of scan '{scan_id}' "
        "(<scan_id>_<sequence>.nii.gz): list the sequences in data_engineering.sequences"
    )


def naming_hints(
    file_names: Collection[str], scan_ids: Collection[str], sequences: Sequence[str] | None
) -> list[str]:
    """What the file names say about how to read them: the setting for a recognised pattern."""
    hints = []
    stems = [scan_id_from_filename(name) for name in file_names]
    stems = [stem for stem in stems if stem is not None]
    matches = [sequence_of(stem, scan_ids) for stem in stems if stem not in scan_ids]
    matches = [match for match in matches if match is not None]
    if sequences is None and matches:
        found = Counter(sequence for _, sequence in matches)
        n_scans = len({scan_id for scan_id, _ in matches})
        hints.append(
            f"{len(matches)} image file(s) are named <scan_id>_<sequence>.nii.gz for "
            f"{n_scans} scan id(s) of scans.csv, with the sequences {sorted(found)}: set "
            + sequence_setting(list(found))
        )
    bids = [name for name in file_names if _BIDS_NAME.search(name)]
    if bids:
        suffixes = sorted({_BIDS_NAME.search(name).group(4) for name in bids})
        hints.append(
            f"{len(bids)} file(s) are named like BIDS (e.g. {bids[0]}): put the dataset in "
            "data/01_raw/bids (the bids_dataset entry) and set data_engineering.source: bids, "
            f"with data_engineering.bids.suffix one of {suffixes}"
        )
    dicom = [
        name
        for name in file_names
        if name.lower().endswith(_DICOM_SUFFIXES)
        or ("/" in name and "." not in name.rsplit("/", 1)[-1])
    ]
    if dicom:
        hints.append(
            f"{len(dicom)} file(s) look like DICOM (e.g. {dicom[0]}): convert each series to "
            "one NIfTI file per scan, e.g. dcm2niix -z y -f <scan_id> -o data/01_raw/images "
            "<series folder>"
        )
    return hints


def _pattern(text: str) -> str:
    """A problem's text without what differs between scans: quoted names and numbers."""
    text = re.sub(r"'[^']*'", "'…'", str(text))
    return re.sub(r"[-+]?\d+(\.\d+)?(e[-+]?\d+)?", "N", text)


def commonest_problems(problems: pd.DataFrame, shown: int = _SHOWN_GROUPS) -> list[str]:
    """One line per kind of problem, the commonest first: count, an example, and the fix."""
    if problems.empty:
        return []
    kinds = problems.assign(
        kind=[
            _pattern(f"{p}|{f}") for p, f in zip(problems["problem"], problems["fix"], strict=True)
        ]
    )
    lines = []
    for _, group in sorted(kinds.groupby("kind", sort=False), key=lambda g: -len(g[1]))[:shown]:
        example = group.iloc[0]
        lines.append(
            f"- {len(group)} x {example['problem']} (e.g. {example['item']}) -> {example['fix']}"
        )
    n_kinds = kinds["kind"].nunique()
    if n_kinds > shown:
        lines.append(f"- and {n_kinds - shown} more kind(s) of problem")
    return lines


def require_enough_scans(
    catalog: pd.DataFrame,
    problems: pd.DataFrame,
    minimum_patients: int,
    why_minimum: str,
    file_names: Collection[str],
    scan_ids: Collection[str],
    settings: Mapping,
) -> None:
    """Raise :class:`TooFewScansError` with a summary when the usable scans of ``catalog``
    belong to fewer than ``minimum_patients`` patients (``why_minimum`` says what needs
    them). ``file_names`` are the image files read, ``scan_ids`` the scans table's ids and
    ``settings`` the ``data_engineering`` parameters (``sequences``, ``source``)."""
    usable = catalog[catalog["status"] == "ok"]
    n_patients = usable["patient_id"].nunique()
    if n_patients >= minimum_patients:
        return
    lines = [
        f"data_engineering stopped at the catalog: {len(usable)} of {len(catalog)} scan(s) "
        f"read are usable ({n_patients} patient(s)), and {why_minimum}.",
    ]
    if settings.get("source", "files") == "files":
        hints = naming_hints(file_names, scan_ids, settings.get("sequences"))
        lines += [f"Hint: {hint}." for hint in hints]
    found = commonest_problems(problems)
    if found:
        lines += [f"Commonest problems ({len(problems)} in all):", *found]
    lines.append(
        "Each problem was logged above as a warning; fix them, or add scans, and run again."
    )
    raise TooFewScansError("\n".join(lines))
