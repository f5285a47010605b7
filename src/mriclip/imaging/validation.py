"""The NIfTI catalog: one row per scan, and every problem found on the way in.

Each problem is either raised (``on_invalid="raise"``: one error listing all problems, each
naming the file or row and the fix) or recorded in the problems table and the item skipped
(``on_invalid="skip"``). Nothing is dropped without a row in that table.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mriclip.imaging.intensity import intensity_fix, intensity_problem
from mriclip.imaging.scan_inputs import DICOM_KEY_END, UnusableInput, dicom_scan_id
from mriclip.imaging.triage import no_row_fix

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
PROBLEM_COLUMNS = ["stage", "scan_id", "item", "problem", "fix"]
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
#: What a scan lacking some of ``data_engineering.sequences`` gets: the first sequence it has
#: in their place (``duplicate``, as BrainMVP does), or left out (``skip``); listed either way.
MISSING_SEQUENCES = ("duplicate", "skip")
#: The source of the sequence settings a data_engineering run reads: parameters, which a fix
#: may change (a model bundle's are fixed by its training).
PARAMETERS = "data_engineering"


class InputDataError(ValueError):
    """Raised when input data is invalid and ``on_invalid`` is ``raise``."""


@dataclass
class ProblemLog:
    """Collects problems; `raise_if_any` turns them into one readable error."""

    stage: str
    rows: list[dict] = field(default_factory=list)

    def add(self, scan_id: str | None, item: str, problem: str, fix: str) -> None:
        self.rows.append(
            {"stage": self.stage, "scan_id": scan_id, "item": item, "problem": problem, "fix": fix}
        )
        logger.warning("%s: %s: %s (%s)", self.stage, item, problem, fix)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=PROBLEM_COLUMNS)

    def raise_if_any(self, on_invalid: str) -> None:
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if self.rows and on_invalid == "raise":
            lines = [f"- {r['item']}: {r['problem']} -> {r['fix']}" for r in self.rows]
            raise InputDataError(
                f"{len(self.rows)} problem(s) in the input data ({self.stage}):\n"
                + "\n".join(lines)
                + "\nFix them, or set on_invalid: skip to skip these items and list them in "
                "the catalog_problems table."
            )


def describe_error(error: BaseException) -> str:
    """``Type: message`` of an error and of the errors that caused it: MONAI wraps the real
    failure (e.g. a ZeroDivisionError in a resize) in a RuntimeError naming only the
    transform."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " <- caused by ".join(parts)


@dataclass(frozen=True)
class SequenceContract:
    """How multi-sequence scans are read: a scan is the files ``<scan_id>_<sequence>.nii.gz``,
    stacked as channels in the order of ``sequences``.

    Args:
        sequences: the sequences' names in channel order (distinct, at least one).
        missing: what a scan lacking some gets, one of :data:`MISSING_SEQUENCES`.
        source: where both come from, as messages name it: :data:`PARAMETERS` (the
            ``data_engineering`` parameters) or e.g. a model bundle's settings, which only a
            new training changes.
    """

    sequences: tuple[str, ...]
    missing: str = "duplicate"
    source: str = PARAMETERS

    def __post_init__(self) -> None:
        names = self.sequences
        if isinstance(names, str) or not names or len(set(names)) != len(names):
            raise ValueError(
                f"{self.setting('sequences')} must be null or distinct names, got {names!r}"
            )
        object.__setattr__(self, "sequences", tuple(names))
        if self.missing not in MISSING_SEQUENCES:
            raise ValueError(
                f"{self.setting('missing_sequences')} must be one of {MISSING_SEQUENCES}, "
                f"got {self.missing!r}"
            )

    def setting(self, key: str) -> str:
        """How messages name the setting ``key`` (``sequences``, ``missing_sequences``)."""
        return f"{self.source}.{key}"

    @property
    def adjustable(self) -> bool:
        """Whether a fix may change the settings (parameters) rather than the files."""
        return self.source == PARAMETERS

    def files(self, scan_id: str) -> list[str]:
        """The files of scan ``scan_id``, in channel order."""
        return [image_file_name(scan_id, name) for name in self.sequences]


def parameters_contract(
    sequences: Sequence[str] | None, missing_sequences: str
) -> SequenceContract | None:
    """The contract ``data_engineering.sequences`` and ``missing_sequences`` describe; None
    (one image per scan) without sequences."""
    return None if sequences is None else SequenceContract(sequences, missing_sequences)


def image_file_name(scan_id: str, sequence: str | None) -> str:
    """The data contract's file of a scan: ``<scan_id>.nii.gz`` for a single image (and a
    label map), ``<scan_id>_<sequence>.nii.gz`` for one sequence of several."""
    return f"{scan_id}.nii.gz" if sequence is None else f"{scan_id}_{sequence}.nii.gz"


def scan_id_from_filename(filename: str) -> str | None:
    """The scan id of an input's key: a NIfTI file name less its suffix, or a DICOM scan's
    folder key (:func:`mriclip.imaging.scan_inputs.dicom_scan_id`); None for anything else."""
    if filename.endswith(DICOM_KEY_END):
        return dicom_scan_id(filename)
    for suffix in NIFTI_SUFFIXES:
        if filename.endswith(suffix):
            return filename[: -len(suffix)]
    return None


def as_3d(image: nib.Nifti1Image) -> np.ndarray:
    """The voxel array as 3D; a 4D file with a singleton 4th axis is accepted."""
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"expected a 3D volume, got shape {data.shape}")
    return data


def require_columns(table: pd.DataFrame, columns: Sequence[str], table_name: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise InputDataError(
            f"{table_name} lacks required column(s) {missing}; it has {list(table.columns)}. "
            "Rename the columns or set the column names in parameters_data_engineering.yml."
        )


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


def _index_files(
    files: Mapping[str, Callable], kind: str, problems: ProblemLog
) -> dict[str, tuple[str, Callable]]:
    indexed: dict[str, tuple[str, Callable]] = {}
    for filename in sorted(files):
        scan_id = scan_id_from_filename(filename)
        unusable = files[filename]
        if isinstance(unusable, UnusableInput):  # e.g. a refused DICOM series: why, and the fix
            problems.add(scan_id, filename, unusable.problem, unusable.fix)
        elif scan_id is None:
            problems.add(
                None, filename, f"{kind} file is not .nii or .nii.gz", "rename or remove it"
            )
        elif scan_id in indexed:
            problems.add(
                scan_id,
                filename,
                f"duplicate {kind} for scan '{scan_id}' (also {indexed[scan_id][0]})",
                "keep one file per scan id",
            )
        else:
            indexed[scan_id] = (filename, files[filename])
    return indexed


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


def _index_sequence_files(
    files: Mapping[str, Callable], contract: SequenceContract, problems: ProblemLog
) -> dict[str, dict[str, tuple[str, Callable]]]:
    """Scan id -> sequence -> (file name, loader) of ``<scan_id>_<sequence>.nii[.gz]`` files;
    a file naming no sequence is a problem that names the files a scan needs."""
    indexed: dict[str, dict[str, tuple[str, Callable]]] = {}
    for stem, (filename, load) in _index_files(files, "image", problems).items():
        sequence = next((name for name in contract.sequences if stem.endswith(f"_{name}")), None)
        if sequence is None:
            problems.add(
                None,
                filename,
                f"image file names no sequence of {contract.setting('sequences')} "
                f"{list(contract.sequences)}; expected the scan's files "
                + ", ".join(contract.files(stem)),
                "name each sequence's file <scan_id>_<sequence>.nii.gz"
                + (
                    ", or add its sequence to the parameter"
                    if contract.adjustable
                    else "; the model was trained on these sequences"
                ),
            )
            continue
        indexed.setdefault(stem[: -len(sequence) - 1], {})[sequence] = (filename, load)
    return indexed


def _index_images(
    files: Mapping[str, Callable], contract: SequenceContract | None, problems: ProblemLog
) -> tuple[dict[str, tuple[str, Callable]], dict[str, dict[str, tuple[str, Callable]]]]:
    """Scan id -> (file name, loader) of its image (with ``contract``: of the first sequence
    it has), and scan id -> sequence -> (file name, loader) (empty without ``contract``)."""
    if contract is None:
        return _index_files(files, "image", problems), {}
    sequence_files = _index_sequence_files(files, contract, problems)
    image_files = {
        scan_id: next(found[name] for name in contract.sequences if name in found)
        for scan_id, found in sequence_files.items()
    }
    return image_files, sequence_files


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
    image_files, sequence_files = _index_images(images, contract, problems)
    label_files = _index_files(labels, "label", problems)
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
    (then ``lesion_id`` is empty). Regions outside the vocabulary are problems.
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
        raise InputDataError(
            "No lesion information: lesions.csv is empty or absent and scans.csv has no "
            f"'{columns.get('regions')}' column. Provide one of them (see README, data contract)."
        )

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
    image_files, sequence_files = _index_images(images, sequences, problems)
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
