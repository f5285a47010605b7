"""The NIfTI catalog: one row per scan, and every problem found on the way in.

Which file is which scan is :mod:`mriclip.imaging.file_index`; the problems table is
:mod:`mriclip.imaging.problems`; the lesions table is :mod:`mriclip.imaging.lesion_table`.

Each problem is either raised (``on_invalid="raise"``: one error listing all problems, each
naming the file or row and the fix) or recorded in the problems table and the item skipped
(``on_invalid="skip"``). Nothing is dropped without a row in that table.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mriclip.imaging.file_index import (
    MISSING_SEQUENCES,
    SequenceContract,
    image_file_name,
    index_files,
    index_images,
    parameters_contract,
)
from mriclip.imaging.intensity import intensity_fix, intensity_problem
from mriclip.imaging.problems import InputDataError, ProblemLog, require_columns
from mriclip.imaging.triage import no_row_fix

logger = logging.getLogger(__name__)

CATALOG_COLUMNS = [
    "scan_id",
    "patient_id",
    "image_file",
    "label_file",
    "shape",
    "spacing",
    "orientation",
    "dtype",
    "intensity_min",
    "intensity_max",
    "sha256",
    "status",
    "sequence_files",  # multi-sequence scans: the file of each sequence, ";"-joined, in order
]


def as_3d(image: nib.Nifti1Image) -> np.ndarray:
    """The voxel array as 3D; a 4D file with a singleton 4th axis is accepted."""
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {data.shape}")
    return data


def require_file_layout(images: Mapping, scans: pd.DataFrame) -> None:
    """The file layout's inputs exist: both may be absent in a project that reads BIDS."""
    if not images and scans.empty:
        raise InputDataError(
            "No input data: raw_images (data/01_raw/images) has no files and raw_scans "
            "(data/01_raw/scans.csv) is absent. Put your data there (README, data contract), "
            "run `kedro run --pipeline demo_data` for the phantom cohort, or set "
            "data_engineering.source: bids to read the bids_dataset entry."
        )
    if scans.empty:
        raise InputDataError(
            "raw_scans (data/01_raw/scans.csv) is absent or empty: add one row per scan with "
            "scan_id, patient_id and any clinical columns (README, data contract)."
        )


def content_sha256(data: np.ndarray, affine: np.ndarray) -> str:
    """Hash of voxels and affine: the same scan gives the same hash however it is compressed."""
    digest = hashlib.sha256()
    digest.update(np.ascontiguousarray(data).tobytes())
    digest.update(np.asarray(affine, dtype=np.float64).tobytes())
    return digest.hexdigest()


def _check_label(load_label: Callable, image: nib.Nifti1Image, shape) -> str | None:
    """Problem text for a label map that is unreadable or not on the image's grid, else None."""
    try:
        label = load_label()
        label_data = as_3d(label)
    except Exception as error:  # noqa: BLE001 - any read failure is a recorded problem
        return f"label map unreadable: {error}"
    if label_data.shape != shape or not np.allclose(label.affine, image.affine, atol=1e-3):
        return (
            f"label map grid {label_data.shape} does not match image grid {shape} "
            "(shape or affine differ)"
        )
    if not np.all(np.isfinite(label_data)) or np.any(label_data != np.round(label_data)):
        return "label map holds non-integer or non-finite values"
    return None


@dataclass(frozen=True)
class GridRule:
    """What the preprocessing grid needs of a scan's geometry.

    Every axis must span at least ``min_extent_voxels`` voxels of ``target_spacing``
    (physical extent = voxels x spacing). The head mask is morphologically opened, which
    erases anything thinner than 3 voxels, and resizing an axis that has shrunk to nothing
    divides by zero; so a field of view that thin cannot be preprocessed.
    """

    target_spacing: Sequence[float]
    min_extent_voxels: float = 4.0

    def problem(self, shape: Sequence[int], voxel_sizes: Sequence[float]) -> str | None:
        extent_mm = np.asarray(shape[:3], dtype=float) * np.asarray(voxel_sizes, dtype=float)
        in_target_voxels = extent_mm / np.asarray(self.target_spacing, dtype=float)
        if np.all(in_target_voxels >= self.min_extent_voxels):
            return None
        return (
            "field of view too small for the target grid: extent "
            + "x".join(f"{e:.3g}" for e in extent_mm)
            + " mm is "
            + "x".join(f"{n:.3g}" for n in in_target_voxels)
            + f" voxels of {'x'.join(f'{s:g}' for s in self.target_spacing)} mm, fewer than "
            f"data_engineering.min_extent_voxels={self.min_extent_voxels:g} along an axis"
        )


def spacing_problem(image: nib.Nifti1Image) -> str | None:
    """Problem text when the affine that preprocessing resamples with has no usable voxel
    size: NaN/inf entries, or a zero or NaN spacing along an axis. (NiftiDataset already
    refuses files whose stored pixdim is zero or NaN without an sform.)"""
    affine = np.asarray(image.affine, dtype=float)
    if not np.all(np.isfinite(affine)):
        return "affine holds NaN/inf values, so the voxel spacing is unknown"
    sizes = nib.affines.voxel_sizes(affine)
    if not np.all(sizes > 0):  # False for NaN too
        return f"voxel spacing {'x'.join(f'{s:.3g}' for s in sizes)} mm has a zero or NaN size"
    return None


def same_grid(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> bool:
    """Whether two images share shape and affine (to 1e-3 mm)."""
    return image.shape[:3] == reference.shape[:3] and np.allclose(
        image.affine, reference.affine, atol=1e-3
    )


def _inspect_sequences(
    row: dict,
    scan_files: Mapping[str, tuple[str, Callable]],
    contract: SequenceContract,
    notes: ProblemLog,
    max_abs_intensity: float | None = None,
) -> str:
    """Check a multi-sequence scan's other sequences against its first (``row`` holds the
    first's facts): each must be a readable 3D volume with a spacing; one on another grid is
    resampled onto the first's in preprocessing, and listed in ``notes``, as are duplicated
    missing sequences. Fills ``sequence_files``; returns "ok" or the problem."""
    scan_id, reference_file = row["scan_id"], row["image_file"]
    sequences, rule = contract.sequences, contract.setting("missing_sequences")
    missing = [name for name in sequences if name not in scan_files]
    if missing and contract.missing == "skip":
        return f"missing sequence(s) {missing} ({rule}: skip)"
    reference = scan_files[next(name for name in sequences if name in scan_files)][1]()
    for name, (filename, load) in scan_files.items():
        if filename == reference_file:
            continue
        try:
            image = load()
            data = as_3d(image)
        except Exception as error:  # noqa: BLE001 - unreadable files are problems
            return f"sequence {name} ({filename}) unreadable or not a 3D volume: {error}"
        problem = spacing_problem(image) or intensity_problem(data, max_abs_intensity)
        if problem:
            return f"sequence {name} ({filename}): {problem}"
        if not same_grid(image, reference):
            notes.add(
                scan_id,
                filename,
                f"grid {'x'.join(map(str, data.shape))} differs from {reference_file}'s "
                f"{'x'.join(map(str, reference.shape[:3]))} (shape or affine)",
                f"resampled (linear) onto {reference_file}'s grid before preprocessing",
            )
    if missing:
        notes.add(
            scan_id,
            f"scan '{scan_id}'",
            f"missing sequence(s) {missing}",
            f"filled with {reference_file} ({rule}: duplicate); add "
            + ", ".join(f"images/{image_file_name(scan_id, name)}" for name in missing)
            + (", or set it to skip" if contract.adjustable else ""),
        )
    row["sequence_files"] = ";".join(
        scan_files[name][0] if name in scan_files else reference_file for name in sequences
    )
    return "ok"


def build_nifti_catalog(
    images: Mapping[str, Callable[[], nib.Nifti1Image]],
    labels: Mapping[str, Callable[[], nib.Nifti1Image]],
    scans: pd.DataFrame,
    columns: Mapping[str, str],
    on_invalid: str = "skip",
    grid: GridRule | None = None,
    sequences: Sequence[str] | None = None,
    missing_sequences: str = "duplicate",
    max_abs_intensity: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate every image (and its label map) against the scans table.

    ``images``/``labels`` map file names to loaders (Kedro ``PartitionedDataset``);
    ``columns`` names the ``scan_id`` and ``patient_id`` columns of ``scans``; ``grid``,
    when given, rejects scans whose field of view the preprocessing grid cannot hold;
    voxels NaN/inf or beyond ``±max_abs_intensity`` (None: no bound), or a constant volume,
    reject a scan too (:mod:`mriclip.imaging.intensity`).
    With ``sequences``, a scan is the files ``<scan_id>_<sequence>.nii.gz``: the first it has
    is checked as its image (label map, grid), the others against it (see
    :data:`MISSING_SEQUENCES` for absent ones); resampled and duplicated sequences are
    listed among the problems as notes, which never stop a run.
    Returns ``(catalog, problems)``; the catalog has one row per scan with a status.
    """
    if missing_sequences not in MISSING_SEQUENCES:
        raise ValueError(
            f"data_engineering.missing_sequences must be one of {MISSING_SEQUENCES}, "
            f"got {missing_sequences!r}"
        )
    contract = parameters_contract(sequences, missing_sequences)
    scan_col, patient_col = columns["scan_id"], columns["patient_id"]
    require_columns(scans, [scan_col, patient_col], "scans table (scans.csv)")
    problems = ProblemLog("nifti_catalog")

    scan_ids = scans[scan_col].astype(str)
    duplicated = scan_ids[scan_ids.duplicated(keep=False)]
    for row_number, scan_id in duplicated.items():
        problems.add(
            scan_id,
            f"scans.csv row {row_number + 2}",
            f"duplicate scan_id '{scan_id}'",
            "give every scan a unique id",
        )
    patients = dict(zip(scan_ids, scans[patient_col].astype(str), strict=True))
    missing_patient = scans[patient_col].isna()
    for row_number in scans.index[missing_patient]:
        problems.add(
            scan_ids[row_number],
            f"scans.csv row {row_number + 2}",
            "patient_id is empty",
            "fill in the patient id",
        )

    notes = ProblemLog("sequences")
    image_files, sequence_files = index_images(images, contract, problems)
    label_files = index_files(labels, "label", problems)
    for scan_id in sorted(set(label_files) - set(image_files)):
        problems.add(
            scan_id,
            label_files[scan_id][0],
            "label map without an image",
            "add the image or remove the label map",
        )
    for scan_id in sorted(set(scan_ids) - set(image_files)):
        problems.add(
            scan_id,
            f"scans.csv scan_id '{scan_id}'",
            "row has no image file",
            f"add images/{image_file_name(scan_id, (sequences or [None])[0])} or remove the row",
        )

    bad_ids = set(duplicated) | set(scan_ids[missing_patient])
    rows = []
    for scan_id, (image_file, load_image) in tqdm(
        image_files.items(), desc="catalog", unit="scan", disable=None
    ):
        row = dict.fromkeys(CATALOG_COLUMNS)
        row.update(
            scan_id=scan_id,
            patient_id=patients.get(scan_id),
            image_file=image_file,
            label_file=label_files.get(scan_id, (None,))[0],
        )
        status = _inspect_image(row, load_image, label_files.get(scan_id), grid, max_abs_intensity)
        if status == "ok" and contract is not None:
            status = _inspect_sequences(
                row, sequence_files[scan_id], contract, notes, max_abs_intensity
            )
        if status == "ok" and scan_id not in patients:
            status = "scan has no row in scans.csv"
            fix = no_row_fix(scan_id, patients)
        elif status == "ok" and scan_id in bad_ids:
            status = "ambiguous or incomplete scans.csv row"
            fix = "see the scans.csv problem rows above"
        else:
            fix = _fix_for(status)
        if status != "ok":
            problems.add(scan_id, image_file, status, fix)
        row["status"] = status
        rows.append(row)

    problems.raise_if_any(on_invalid)
    catalog = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    n_ok = int((catalog["status"] == "ok").sum())
    logger.info(
        "nifti_catalog: %d of %d image files usable, %d problem(s) listed",
        n_ok,
        len(catalog),
        len(problems.rows),
    )
    return catalog, pd.concat([problems.table(), notes.table()], ignore_index=True)


SPACING_FIX = (
    "set the voxel sizes in the header (pixdim and sform/qform, e.g. nibabel "
    "header.set_zooms and set_sform) or re-export the file from the converter"
)
FIELD_OF_VIEW_FIX = (
    "leave the scan out (it is a slab or a localiser, not a head volume), or choose a finer "
    "data_engineering.preprocessing.target_spacing"
)


def _fix_for(status: str) -> str:
    fix = intensity_fix(status)
    if fix is not None:
        return fix
    if "spacing" in status or "affine holds" in status:
        return SPACING_FIX
    if status.startswith("field of view"):
        return FIELD_OF_VIEW_FIX
    if status.startswith("missing sequence"):
        return "add the scan's file of each missing sequence, <scan_id>_<sequence>.nii.gz"
    return "re-export the file or remove it; see the problem text"


def _inspect_image(
    row: dict,
    load_image: Callable,
    label: tuple[str, Callable] | None,
    grid: GridRule | None = None,
    max_abs_intensity: float | None = None,
) -> str:
    """Fill the catalog row's image facts; return "ok" or the problem."""
    try:
        image = load_image()
        data = as_3d(image)
    except Exception as error:  # noqa: BLE001 - unreadable/truncated/non-3D files are problems
        return f"unreadable or not a 3D volume: {error}"
    zooms = image.header.get_zooms()[:3]
    geometry_problem = spacing_problem(image)
    row.update(
        shape="x".join(map(str, data.shape)),
        spacing="x".join(f"{zoom:.3g}" for zoom in zooms),
        # a singular or NaN affine has no orientation
        orientation=None if geometry_problem else "".join(nib.aff2axcodes(image.affine)),
        dtype=str(data.dtype),
        sha256=content_sha256(data, image.affine),
    )
    if geometry_problem is None and grid is not None:
        geometry_problem = grid.problem(data.shape, nib.affines.voxel_sizes(image.affine))
    if geometry_problem:
        return geometry_problem
    if np.isfinite(data).all():
        row.update(intensity_min=float(data.min()), intensity_max=float(data.max()))
    intensity = intensity_problem(data, max_abs_intensity)
    if intensity:
        return intensity
    if label is not None:  # (file name, loader)
        label_problem = _check_label(label[1], image, data.shape)
        if label_problem:
            return label_problem
    return "ok"


def build_unlabelled_catalog(
    images: Mapping[str, Callable[[], nib.Nifti1Image]],
    on_invalid: str = "skip",
    sequences: SequenceContract | None = None,
    max_abs_intensity: float | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Validate a folder of scans that have no table row (extra scans for pretraining, new
    scans for inference): any NIfTI file is a scan, or with ``sequences`` a scan is its
    sequences' files, checked as :func:`build_nifti_catalog` checks them (notes included)."""
    problems = ProblemLog("unlabelled_catalog")
    notes = ProblemLog("sequences")
    image_files, sequence_files = index_images(images, sequences, problems)
    rows = []
    for scan_id, (image_file, load_image) in image_files.items():
        row = dict.fromkeys(CATALOG_COLUMNS)
        row.update(scan_id=scan_id, image_file=image_file)
        status = _inspect_image(row, load_image, None, None, max_abs_intensity)
        if status == "ok" and sequences is not None:
            status = _inspect_sequences(
                row, sequence_files[scan_id], sequences, notes, max_abs_intensity
            )
        if status != "ok":
            problems.add(scan_id, image_file, status, _fix_for(status))
        row["status"] = status
        rows.append(row)
    problems.raise_if_any(on_invalid)
    catalog = pd.DataFrame(rows, columns=CATALOG_COLUMNS)
    return catalog, pd.concat([problems.table(), notes.table()], ignore_index=True)
