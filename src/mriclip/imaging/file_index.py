"""Which file is which scan: the data contract's file names, single-image and
multi-sequence, and the indexing of a folder's files by scan id.

A scan is ``<scan_id>.nii.gz`` (with a label map of the same name), or with sequences the
files ``<scan_id>_<sequence>.nii.gz``, stacked as channels in the sequences' order; a DICOM
scan is a key ending in ``/`` (:mod:`mriclip.imaging.scan_inputs`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from mriclip.imaging.problems import ProblemLog
from mriclip.imaging.scan_inputs import (
    DICOM_KEY_END,
    NIFTI_SUFFIXES,
    UnusableInput,
    dicom_scan_id,
)

#: What a scan lacking some of ``data_engineering.sequences`` gets: the first sequence it has
#: in their place (``duplicate``, as BrainMVP does), or left out (``skip``); listed either way.
MISSING_SEQUENCES = ("duplicate", "skip")
#: The source of the sequence settings a data_engineering run reads: parameters, which a fix
#: may change (a model bundle's are fixed by its training).
PARAMETERS = "data_engineering"


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


def index_files(
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


def index_sequence_files(
    files: Mapping[str, Callable], contract: SequenceContract, problems: ProblemLog
) -> dict[str, dict[str, tuple[str, Callable]]]:
    """Scan id -> sequence -> (file name, loader) of ``<scan_id>_<sequence>.nii[.gz]`` files;
    a file naming no sequence is a problem that names the files a scan needs."""
    indexed: dict[str, dict[str, tuple[str, Callable]]] = {}
    for stem, (filename, load) in index_files(files, "image", problems).items():
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


def index_images(
    files: Mapping[str, Callable], contract: SequenceContract | None, problems: ProblemLog
) -> tuple[dict[str, tuple[str, Callable]], dict[str, dict[str, tuple[str, Callable]]]]:
    """Scan id -> (file name, loader) of its image (with ``contract``: of the first sequence
    it has), and scan id -> sequence -> (file name, loader) (empty without ``contract``)."""
    if contract is None:
        return index_files(files, "image", problems), {}
    sequence_files = index_sequence_files(files, contract, problems)
    image_files = {
        scan_id: next(found[name] for name in contract.sequences if name in found)
        for scan_id, found in sequence_files.items()
    }
    return image_files, sequence_files
