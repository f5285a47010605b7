"""Preprocessing a whole collection of scans: streaming, parallel and incremental.

The per-scan result is cached on disk in a store the catalog knows (a
``mriclip.datasets.ScanStore``, catalog entry ``preprocessing_cache``):

1. Each scan is fingerprinted (sha256 of the image and the label map as stored, and of the
   preprocessing settings); a scan whose fingerprint the store already holds is reused as
   it is, and nothing is started for it. Each other scan is one task, run in this process,
   over ``workers`` processes or on a Dask cluster (:mod:`mriclip.parallel`), with a time
   limit per scan (``timeout_s``): a scan over it is ended and reported with the time it ran,
   and the run goes on. The task preprocesses the scan, writes the volume and label map into
   the store and returns the record: the per-scan report (with the registration transform,
   which the scan's twins reuse) and lesion geometry, a few hundred bytes.
2. Only records come back, so memory does not grow with the number of scans: no volume
   travels between processes, and the caller holds none. An error inside a task comes back
   as its text, to be listed as a problem; the other scans go on.
3. The caller gets loaders of the stored arrays. A node returns them to a
   ``PartitionedDataset``, whose lazy saving loads and writes one at a time.

Each scan is processed once per change: a re-run reads two files per scan to hash them and
copies the stored arrays to the output. The price is disk: the store holds a second copy of
the preprocessed collection (delete it any time; the next run redoes every scan). The store
keeps only the scans of the last run. A change of this module's output (not of a setting)
must bump ``RECORD_VERSION``, which redoes every scan.
"""

from __future__ import annotations

import hashlib
import json
import logging
import traceback
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.processing import resample_from_to

from mriclip.imaging.preprocessing import (
    PreprocessingConfig,
    lesion_geometry,
    preprocess_scan,
    warm_up,
)
from mriclip.imaging.problems import ProblemLog, describe_error
from mriclip.imaging.validation import as_3d, content_sha256, same_grid
from mriclip.parallel import TimeLimitExceeded, map_as_completed

logger = logging.getLogger(__name__)

#: Part of every fingerprint: bump it when preprocessing makes different arrays or records.
#: 2: the report holds the registration transform.
RECORD_VERSION = 2


class Store(Protocol):
    """What the collection needs of a store (``mriclip.datasets.ScanStore``)."""

    def record(self, scan_id: str) -> dict | None: ...
    def write(self, scan_id: str, arrays: dict[str, np.ndarray], record: dict) -> None: ...
    def loader(self, scan_id: str, name: str) -> Callable[[], np.ndarray]: ...
    def retain(self, scan_ids: list[str]) -> None: ...


@dataclass(frozen=True)
class ScanSource:
    """Where one scan comes from: loaders of its image and (optional) label map, and of its
    further sequences (stacked after the image as channels; resampled onto its grid)."""

    scan_id: str
    load_image: Callable
    load_label: Callable | None = None
    load_sequences: tuple[Callable, ...] = ()


@dataclass(frozen=True)
class ScanTask:
    source: ScanSource
    config: PreprocessingConfig
    settings_sha256: str
    store: Store


@dataclass
class PreprocessedCollection:
    """Records of the scans done (in the order given), the error text of those that failed
    (or the :class:`TimeLimitExceeded` of those ended over the time limit), and the store
    that holds the arrays."""

    records: dict[str, dict]
    failures: dict[str, str | TimeLimitExceeded]
    store: Store

    def loaders(self, name: str) -> dict[str, Callable[[], np.ndarray]]:
        """Scan id -> loader of the stored ``name`` array ("volume" or "label")."""
        return {
            scan_id: self.store.loader(scan_id, name)
            for scan_id, record in self.records.items()
            if name in record["arrays"]
        }


def settings_sha256(config: PreprocessingConfig) -> str:
    settings = json.dumps({"version": RECORD_VERSION, **asdict(config)}, sort_keys=True)
    return hashlib.sha256(settings.encode()).hexdigest()


def source_sha256(load: Callable) -> str:
    """SHA-256 of the file a loader reads (a catalog dataset's bound ``load``); for a loader
    that is no file dataset, of the loaded image's voxels and affine."""
    dataset = getattr(load, "__self__", None)
    if hasattr(dataset, "file_sha256"):
        return dataset.file_sha256()
    image = load()
    return content_sha256(np.asanyarray(image.dataobj), image.affine)


def fingerprint(source: ScanSource, settings: str) -> dict[str, str | list | None]:
    prints = {
        "image_sha256": source_sha256(source.load_image),
        "label_sha256": None if source.load_label is None else source_sha256(source.load_label),
        "settings_sha256": settings,
    }
    if source.load_sequences:
        prints["sequence_sha256"] = [source_sha256(load) for load in source.load_sequences]
    return prints


@dataclass(frozen=True)
class TaskFailure:
    """Why a scan failed, as text: an exception object may not travel back from a worker."""

    message: str
    traceback: str


def stored_record(task: ScanTask) -> tuple[dict | None, dict | None]:
    """The scan's fingerprint and its stored record when that has the same one, else None;
    ``(None, None)`` when the files cannot even be hashed (the task will say why)."""
    try:
        prints = fingerprint(task.source, task.settings_sha256)
    except Exception:  # noqa: BLE001 - reported by the task, with the error
        return None, None
    stored = task.store.record(task.source.scan_id)
    return prints, stored if stored is not None and stored["fingerprint"] == prints else None


def run_task(task: ScanTask) -> tuple[dict, bool] | TaskFailure:
    """``(record, reused)`` for one scan, or why it failed."""
    try:
        prints, stored = stored_record(task)
        if stored is not None:
            return stored, True
        return _preprocess(task, prints or fingerprint(task.source, task.settings_sha256)), False
    except Exception as error:  # noqa: BLE001 - one bad scan must not end the run
        return TaskFailure(describe_error(error), traceback.format_exc())


def load_channels(source: ScanSource) -> tuple[nib.Nifti1Image, list[np.ndarray]]:
    """The scan's image (its reference: the grid and affine of its channels) and the 3D
    array of each channel on that grid: the image's, then its further sequences' (resampled
    onto it where they lie on another)."""
    image = source.load_image()
    sequences = [as_3d(on_grid_of(load(), image)) for load in source.load_sequences]
    return image, [as_3d(image), *sequences]


def _preprocess(task: ScanTask, prints: dict) -> dict:
    source = task.source
    image, channels = load_channels(source)
    label = None if source.load_label is None else as_3d(source.load_label())
    volume, label_out, report = preprocess_scan(
        image, channels[0], label, task.config, channels[1:]
    )
    arrays = {"volume": volume}
    record = {"fingerprint": prints, "report": report, "lesions": None}
    if label_out is not None:
        arrays["label"] = label_out
        record["lesions"] = {
            str(lesion_id): [*centre, n_voxels]
            for lesion_id, (centre, n_voxels) in lesion_geometry(label_out).items()
        }
    record["arrays"] = sorted(arrays)
    task.store.write(source.scan_id, arrays, record)
    return record


def on_grid_of(image: nib.Nifti1Image, reference: nib.Nifti1Image) -> nib.Nifti1Image:
    """``image`` resampled (linear) onto ``reference``'s grid, unless it is on it already."""
    if same_grid(image, reference):
        return image
    grid = (reference.shape[:3], reference.affine)
    return resample_from_to(nib.Nifti1Image(as_3d(image), image.affine), grid, order=1)


def preprocess_collection(
    sources: list[ScanSource],
    config: PreprocessingConfig,
    store: Store,
    workers: int,
    dask_scheduler: str | None,
    timeout_s: float | None = None,
) -> PreprocessedCollection:
    """Preprocess every scan of ``sources`` that ``store`` does not hold with the same
    fingerprint, each within ``timeout_s`` seconds (None: no limit); see the module
    docstring."""
    settings = settings_sha256(config)
    tasks = {source.scan_id: ScanTask(source, config, settings, store) for source in sources}
    results: dict[str, Any] = {}
    for scan_id, task in list(tasks.items()):
        stored = stored_record(task)[1]
        if stored is not None:
            results[scan_id] = (stored, True)
            del tasks[scan_id]
    if tasks and timeout_s is not None and not dask_scheduler:
        warm_up(config)  # the processes forked per scan inherit the template
    for outcome in map_as_completed(
        run_task, tasks, workers, dask_scheduler, "preprocess", timeout_s
    ):
        if isinstance(outcome.error, TimeLimitExceeded):
            results[outcome.key] = TimeLimitExceeded(outcome.error.limit_s, outcome.error.elapsed_s)
        elif outcome.error is not None:  # the worker itself failed, not the scan
            error = outcome.error
            details = "".join(traceback.format_exception(error))
            results[outcome.key] = TaskFailure(describe_error(error), details)
        else:
            results[outcome.key] = outcome.result
    records, failures, n_reused = {}, {}, 0
    for source in sources:
        result = results[source.scan_id]
        if isinstance(result, TimeLimitExceeded):
            failures[source.scan_id] = result
        elif isinstance(result, TaskFailure):
            logger.debug("preprocessing %s failed:\n%s", source.scan_id, result.traceback)
            failures[source.scan_id] = result.message
        else:
            records[source.scan_id] = result[0]
            n_reused += result[1]
    store.retain(list(records))
    logger.info(
        "preprocessing: %d scans reused unchanged, %d processed, %d failed",
        n_reused,
        len(records) - n_reused,
        len(failures),
    )
    return PreprocessedCollection(records, failures, store)


def scan_files(scan) -> list[str]:
    """The image files of a NIfTI-catalog row, one per channel: its sequences, or its one
    image."""
    if isinstance(scan.sequence_files, str):
        return scan.sequence_files.split(";")
    return [scan.image_file]


def scan_source(
    scan, images: Mapping[str, Callable], labels: Mapping[str, Callable] | None = None
) -> ScanSource:
    """The source of a NIfTI-catalog row from the ``images`` (and ``labels``) partitions by
    file name: its image, label map (when it has one and ``labels`` are given) and further
    sequences."""
    has_label = labels is not None and isinstance(scan.label_file, str)
    return ScanSource(
        scan.scan_id,
        images[scan.image_file],
        labels[scan.label_file] if has_label else None,
        tuple(images[file] for file in scan_files(scan)[1:]),
    )


def preprocess_catalog(
    catalog: pd.DataFrame,
    images: dict[str, Callable],
    labels: dict[str, Callable],
    config: PreprocessingConfig,
    store: Store,
    workers: int,
    dask_scheduler: str | None,
    timeout_s: float | None = None,
) -> tuple[PreprocessedCollection, ProblemLog]:
    """:func:`preprocess_collection` of the usable (``ok``) rows of a NIfTI catalog, its
    ``images`` and ``labels`` partitions by file name; a scan that failed or ran over
    ``timeout_s`` becomes a row of the returned "preprocessing" problem log."""
    usable = catalog[catalog["status"] == "ok"]
    sources = [scan_source(scan, images, labels) for scan in usable.itertuples()]
    done = preprocess_collection(sources, config, store, workers, dask_scheduler, timeout_s)
    problems = ProblemLog("preprocessing")
    for scan in usable.itertuples():
        failure = done.failures.get(scan.scan_id)
        if isinstance(failure, TimeLimitExceeded):
            problems.add(
                scan.scan_id,
                scan.image_file,
                f"preprocessing took too long: {failure}",
                "inspect the scan (extreme or odd intensities, an unusual header?) or remove "
                "it; a scan this slow that is fine needs a higher "
                "data_engineering.scan_timeout_s",
            )
        elif failure is not None:
            problems.add(
                scan.scan_id,
                scan.image_file,
                f"preprocessing failed: {failure}",
                "inspect the scan (empty, a slab, or an unusual header?) or remove it; "
                "the log has the traceback at DEBUG level",
            )
    return done, problems
