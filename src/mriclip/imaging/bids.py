"""A BIDS dataset as mriclip input: the same image loaders, label loaders and scans table the
file layout gives, indexed with pybids (the field's standard BIDS reader).

One scan per anatomical image ``sub-<label>/[ses-<label>/]<datatype>/*_<suffix>.nii[.gz]``:
its scan id is the file name without suffix and extension (``sub-01_ses-1``, or
``sub-01_ses-1_run-2`` when a session holds several runs), its patient id the subject
(``sub-01``). ``participants.tsv`` and each subject's ``sessions.tsv`` are the clinical
table (``n/a`` is missing; a session's value wins over the participant's). Lesion label maps
come from a derivatives dataset, found by pybids entities (a parameter) and matched to the
image by subject and session. Whatever cannot become a scan is a problem row.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import pandas as pd

from mriclip.imaging.problems import InputDataError, ProblemLog

logger = logging.getLogger(__name__)

NIFTI_EXTENSIONS = [".nii.gz", ".nii"]
# Entities that tell two images of one session apart; a label map that names one of them must
# name the image's value.
DISTINGUISHING_ENTITIES = ("acquisition", "ceagent", "reconstruction", "run")
TSV_READ_ARGS = {"sep": "\t", "na_values": ["n/a", ""], "keep_default_na": False}


@dataclass(frozen=True)
class BidsRoot:
    """A BIDS dataset folder, not yet indexed; ``loader`` turns a file into a NIfTI loader."""

    path: Path
    loader: Callable[[str], Callable[[], nib.Nifti1Image]]

    def layout(self, derivatives: str | None):
        """The pybids index of the dataset (and of its derivatives folder, when it exists)."""
        from bids import BIDSLayout

        if not self.path.is_dir():
            raise InputDataError(
                f"BIDS dataset folder '{self.path}' does not exist. Put the dataset there or "
                "point the catalog entry bids_dataset at it, or set data_engineering.source: "
                "files for the data/01_raw/images layout."
            )
        if not (self.path / "dataset_description.json").is_file():
            raise InputDataError(
                f"'{self.path}' is not a BIDS dataset: it has no dataset_description.json "
                '(BIDS requires one, e.g. {"Name": "my study", "BIDSVersion": "1.9.0"}).'
            )
        derivatives_path = self.path / derivatives if derivatives else None
        use_derivatives = derivatives_path is not None and derivatives_path.is_dir()
        undescribed = [
            folder.name
            for folder in (sorted(derivatives_path.iterdir()) if use_derivatives else [])
            if folder.is_dir() and not (folder / "dataset_description.json").is_file()
        ]
        if undescribed:  # pybids would skip them without a word, and their masks with them
            raise InputDataError(
                f"derivatives dataset(s) {undescribed} in '{derivatives_path}' have no "
                "dataset_description.json, so pybids cannot index their lesion masks. Add one "
                '(e.g. {"Name": "lesions", "BIDSVersion": "1.9.0", "DatasetType": '
                '"derivative", "GeneratedBy": [{"Name": "manual"}]}).'
            )
        try:
            # validate=False: a file the BIDS validator dislikes must not vanish silently
            return BIDSLayout(
                self.path,
                validate=False,
                derivatives=str(derivatives_path) if use_derivatives else False,
            )
        except Exception as error:  # pybids' errors name the rule, not always the folder
            raise InputDataError(
                f"pybids cannot index the BIDS dataset '{self.path}': {error}. Each dataset "
                "(and each derivatives dataset) needs a dataset_description.json; see "
                "https://bids-specification.readthedocs.io"
            ) from error


@dataclass
class BidsInput:
    images: dict[str, Callable]  # "<scan_id>.nii[.gz]" -> loader, as raw_images
    labels: dict[str, Callable]  # the same for label maps, as raw_labels
    scans: pd.DataFrame  # one row per scan, as scans.csv, plus bids_image/bids_label
    problems: pd.DataFrame


def read_tsv(path: Path, id_column: str) -> pd.DataFrame:
    table = pd.read_csv(path, dtype={id_column: str}, **TSV_READ_ARGS)
    if id_column not in table.columns:
        raise InputDataError(
            f"{path} has no '{id_column}' column (it has {list(table.columns)}); BIDS requires "
            "it as the first column"
        )
    return table


def _extension(filename: str) -> str:
    return ".nii.gz" if filename.endswith(".nii.gz") else ".nii"


def _relative(file, layout) -> str:
    """A file's path from the BIDS root (pybids gives derivatives' from their own root)."""
    return Path(os.path.relpath(file.path, layout.root)).as_posix()


def _scan_id(image, suffix: str) -> str:
    return image.filename.removesuffix(_extension(image.filename)).removesuffix(f"_{suffix}")


def _matching_labels(entities: Mapping, label_files: list) -> list:
    def matches(label) -> bool:
        theirs = label.get_entities()
        return (
            theirs.get("subject") == entities.get("subject")
            and theirs.get("session") == entities.get("session")
            and all(
                theirs.get(name) in (None, entities.get(name)) for name in DISTINGUISHING_ENTITIES
            )
        )

    return [label for label in label_files if matches(label)]


def _unique_rows(
    table: pd.DataFrame, id_column: str, where: str, problems: ProblemLog
) -> pd.DataFrame:
    """The table indexed by its id column; repeated ids are problems (the first row is used)."""
    duplicated = table[id_column].duplicated(keep="first")
    for row_number in table.index[duplicated]:
        problems.add(
            table.at[row_number, id_column],
            f"{where} row {row_number + 2}",
            f"duplicate {id_column} (the first row is used)",
            f"keep one row per {id_column}",
        )
    return table[~duplicated].set_index(id_column)


def _clinical_rows(
    root: Path, subjects: list[str], problems: ProblemLog
) -> tuple[pd.DataFrame | None, dict[str, pd.DataFrame]]:
    """participants.tsv (None when absent) and each subject's sessions.tsv, indexed by id."""
    participants = None
    if (root / "participants.tsv").is_file():
        table = read_tsv(root / "participants.tsv", "participant_id")
        participants = _unique_rows(table, "participant_id", "participants.tsv", problems)
    else:
        logger.warning("BIDS dataset %s has no participants.tsv: no clinical columns", root)
    sessions = {}
    for subject in subjects:
        where = f"sub-{subject}/sub-{subject}_sessions.tsv"
        if (root / where).is_file():
            table = read_tsv(root / where, "session_id")
            sessions[subject] = _unique_rows(table, "session_id", where, problems)
    return participants, sessions


def read_bids(root: BidsRoot, params: Mapping, columns: Mapping, on_invalid: str) -> BidsInput:
    """Index a BIDS dataset into mriclip's input (see the module docstring).

    ``params``: ``suffix`` and ``datatype`` of the anatomical images, ``derivatives`` (the
    folder under the root holding derivative datasets) and ``labels`` (pybids entities of a
    lesion label map there, e.g. ``{desc: lesion, suffix: mask}``; None for no label maps).
    ``columns`` names the scan_id/patient_id columns of the table it returns."""
    problems = ProblemLog("bids")
    layout = root.layout(params.get("derivatives"))
    suffix = params["suffix"]
    images = layout.get(
        scope="raw", suffix=suffix, datatype=params["datatype"], extension=NIFTI_EXTENSIONS
    )
    label_files = []
    if params.get("labels") and layout.derivatives:  # no derivatives folder: no label maps
        label_files = layout.get(
            scope="derivatives", extension=NIFTI_EXTENSIONS, **params["labels"]
        )
    participants, sessions = _clinical_rows(root.path, layout.get_subjects(), problems)

    scan_col, patient_col = columns["scan_id"], columns["patient_id"]
    rows, loaders, label_loaders, used_labels, found = [], {}, {}, set(), set()
    for image in sorted(images, key=lambda file: file.path):
        entities = image.get_entities()
        scan_id, patient_id = _scan_id(image, suffix), f"sub-{entities['subject']}"
        session_id = f"ses-{entities['session']}" if "session" in entities else None
        found.add((patient_id, session_id))
        if participants is not None and patient_id not in participants.index:
            problems.add(
                scan_id,
                _relative(image, layout),
                f"subject {patient_id} is not in participants.tsv",
                f"add a row for {patient_id} to participants.tsv",
            )
            continue
        row = {scan_col: scan_id, patient_col: patient_id, "session_id": session_id}
        if participants is not None:
            row.update(participants.loc[patient_id].to_dict())
        subject_sessions = sessions.get(entities["subject"])
        if session_id and subject_sessions is not None and session_id in subject_sessions.index:
            # the session's values win where it has them (age at that session, say)
            values = subject_sessions.loc[session_id].to_dict()
            row.update({key: value for key, value in values.items() if pd.notna(value)})
        loaders[scan_id + _extension(image.filename)] = root.loader(image.path)
        row.update(bids_image=_relative(image, layout), bids_label=None)
        candidates = _matching_labels(entities, label_files)
        if len(candidates) > 1:
            problems.add(
                scan_id,
                _relative(image, layout),
                "several lesion label maps match: "
                + ", ".join(sorted(_relative(label, layout) for label in candidates)),
                "keep one per image, or narrow data_engineering.bids.labels",
            )
        elif candidates:
            label = candidates[0]
            label_loaders[scan_id + _extension(label.filename)] = root.loader(label.path)
            row["bids_label"] = _relative(label, layout)
        used_labels.update(label.path for label in candidates)
        rows.append(row)

    for label in label_files:
        if label.path not in used_labels:
            problems.add(
                None,
                _relative(label, layout),
                "lesion label map without a matching image",
                f"add the subject/session's *_{suffix} image or remove the label map",
            )
    where = f"{params['datatype']}/*_{suffix}.nii.gz"
    _report_tables_without_images(found, participants, sessions, where, problems)
    problems.raise_if_any(on_invalid)
    scans = pd.DataFrame(rows)
    if scans.empty:
        scans = pd.DataFrame(columns=[scan_col, patient_col, "session_id"])
    logger.info(
        "BIDS dataset %s: %d scans of %d subjects, %d label maps, %d problem(s)",
        root.path,
        len(scans),
        scans[patient_col].nunique(),
        len(label_loaders),
        len(problems.rows),
    )
    return BidsInput(loaders, label_loaders, scans, problems.table())


def _report_tables_without_images(
    found: set[tuple[str, str | None]],
    participants: pd.DataFrame | None,
    sessions: Mapping[str, pd.DataFrame],
    where: str,
    problems: ProblemLog,
) -> None:
    """Participants and sessions listed in the tables that have no image (``found`` holds
    the (patient, session) of every image)."""
    patients = {patient for patient, _ in found}
    for patient_id in [] if participants is None else participants.index:
        if patient_id not in patients:
            problems.add(
                None,
                f"participants.tsv: {patient_id}",
                f"participant has no {where} image",
                f"add {patient_id}/[ses-<label>/]{where} or remove the row",
            )
    for subject, table in sessions.items():
        for session_id in table.index:
            if (f"sub-{subject}", session_id) not in found:
                problems.add(
                    None,
                    f"sub-{subject}/sub-{subject}_sessions.tsv: {session_id}",
                    f"session has no {where} image",
                    f"add sub-{subject}/{session_id}/{where} or remove the row",
                )
