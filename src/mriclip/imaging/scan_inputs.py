"""Where scans come from: NIfTI files and DICOM series folders, as loaders keyed like files.

A folder of scans (``data/01_raw/images/``, ``inference/images/``, or what ``mriclip
predict --images`` names) holds NIfTI files and folders of DICOM files. Each such folder is
one scan when it holds one series, keyed ``<folder>/`` (scan id ``<folder>``); a folder
holding several series gives one scan per series, keyed ``<folder>/series<N>/`` (scan id
``<folder>_series<N>``, N the series number). The catalog (:mod:`mriclip.imaging.validation`)
reads a key ending in ``/`` as a DICOM scan. What cannot be a scan (a file that is not DICOM
in a DICOM folder, a refused series) gets a loader that is an :class:`UnusableInput`: the
catalog lists it with its reason, and loading it raises.
"""

from __future__ import annotations

import functools
import logging
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from mriclip.imaging.dicom import DICOM_FIX, DicomSeries, DicomSeriesError, is_dicom, read_header
from mriclip.imaging.nifti_io import read_nifti

logger = logging.getLogger(__name__)

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: The end of a DICOM scan's key.
DICOM_KEY_END = "/"


@dataclass(frozen=True)
class UnusableInput:
    """The loader of an input that is no scan: calling it raises :class:`DicomSeriesError`.

    Args:
        problem: why, for the problems table.
        fix: what the user can do.
    """

    problem: str
    fix: str = DICOM_FIX

    def __call__(self):
        raise DicomSeriesError(self.problem)


def dicom_scan_id(key: str) -> str:
    """The scan id of a DICOM scan's key: ``r01/`` -> ``r01``, ``p1/series3/`` -> ``p1_series3``."""
    return key.rstrip(DICOM_KEY_END).replace("/", "_")


def _visible_files(folder: Path) -> list[Path]:
    return sorted(
        path
        for path in folder.rglob("*")
        if path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(folder).parts)
    )


def holds_dicom(folder: Path) -> bool:
    """Whether any file under ``folder`` is a DICOM file."""
    return any(is_dicom(path) for path in _visible_files(folder))


def dicom_scans(folder: Path, name: str | None = None) -> dict[str, Callable]:
    """The DICOM scans of ``folder`` (its files, at any depth), keyed as the module says with
    ``name`` (default: the folder's name); files that are not an image of a series are keyed
    by their path under ``name`` with an :class:`UnusableInput`."""
    name = name or folder.name
    loaders: dict[str, Callable] = {}
    groups: dict[str, list] = defaultdict(list)
    for path in _visible_files(folder):
        key = f"{name}/{path.relative_to(folder).as_posix()}"
        if not is_dicom(path):
            loaders[key] = UnusableInput(
                "not a DICOM file, in a folder of DICOM files",
                "remove it from the folder (a scan is a folder of DICOM files or a NIfTI file)",
            )
            continue
        try:
            header = read_header(path)
        except Exception as error:  # noqa: BLE001 - an unreadable file is listed, not fatal
            loaders[key] = UnusableInput(f"unreadable DICOM file: {type(error).__name__}: {error}")
            continue
        if header.shape is None:
            loaders[key] = UnusableInput(
                "a DICOM file without an image (a DICOMDIR index, a report, or truncated)",
                "nothing to do if it is an index or a report: it is left out",
            )
            continue
        groups[header.series_uid].append(header)
    by_number: dict[int | None, list[list]] = defaultdict(list)
    for headers in groups.values():
        by_number[headers[0].series_number].append(headers)
    for number, series in sorted(by_number.items(), key=lambda item: str(item[0])):
        key = f"{name}/" if len(groups) == 1 else f"{name}/series{number}/"
        if len(series) > 1:
            files = sum(len(headers) for headers in series)
            problem = (
                f"mixed series in one folder: {len(series)} series ({files} files) share "
                f"series number {number}"
            )
            loaders[key] = UnusableInput(problem, "put each series in a folder of its own")
            continue
        loaders[key] = series_loader(DicomSeries.checked(series[0]))
    logger.info(
        "%s: %d DICOM series in %d files", name, len(groups), sum(map(len, groups.values()))
    )
    return loaders


def series_loader(series: DicomSeries) -> Callable:
    """The series' ``load``, or an :class:`UnusableInput` saying why it is refused."""
    return UnusableInput(series.problem) if series.problem else series.load


def is_nifti(path: Path) -> bool:
    return path.name.endswith(NIFTI_SUFFIXES)


def scan_inputs(path: str | Path) -> dict[str, Callable]:
    """Loaders of the scans at ``path``: a NIfTI file, a DICOM series folder (a folder with
    DICOM files in it, or a single DICOM file), or a folder of NIfTI files and DICOM folders.
    Keys are NIfTI file names and DICOM keys as the module says; a subfolder with neither is
    listed as unusable."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    if path.is_file():
        if is_nifti(path):
            return {path.name: functools.partial(read_nifti, path)}
        if is_dicom(path):
            return {f"{path.stem}/": series_loader(DicomSeries.checked([read_header(path)]))}
        raise ValueError(f"{path} is neither a NIfTI file (.nii, .nii.gz) nor a DICOM file")
    if any(is_dicom(file) for file in path.iterdir() if file.is_file()):
        return dicom_scans(path)
    loaders: dict[str, Callable] = {}
    for entry in sorted(path.iterdir()):
        if entry.name.startswith("."):
            continue
        if entry.is_file() and is_nifti(entry):
            loaders[entry.name] = functools.partial(read_nifti, entry)
        elif entry.is_dir() and holds_dicom(entry):
            loaders.update(dicom_scans(entry))
        else:
            loaders[entry.name + ("/" if entry.is_dir() else "")] = UnusableInput(
                "neither a NIfTI file nor a folder of DICOM files",
                "remove it, or put the scan's files in the layout README describes",
            )
    return loaders
