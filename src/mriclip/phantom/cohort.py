"""The driver: the whole phantom cohort, planned, every patient's anatomy drawn once and
every scan rendered from its own random stream, in the user data contract."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd

from mriclip.imaging.file_index import image_file_name
from mriclip.parallel import map_as_completed
from mriclip.phantom.anatomy import sample_patient_anatomy
from mriclip.phantom.atlas import TemplateAnatomy, load_template_anatomy
from mriclip.phantom.cohort_plan import plan_cohort
from mriclip.phantom.config import _PATIENT_STREAM, _SCAN_STREAM, PhantomConfig
from mriclip.phantom.render import PhantomScan, render_scan

logger = logging.getLogger(__name__)


@dataclass
class PhantomCohort:
    """A whole cohort in the user data contract (see DESIGN.md, "Input data contract"), plus
    the lesion-ablated twins (empty unless ``ablated_twins``)."""

    images: dict[str, nib.Nifti1Image]
    labels: dict[str, nib.Nifti1Image]
    scans: pd.DataFrame
    lesions: pd.DataFrame
    ablated_images: dict[str, nib.Nifti1Image] = field(default_factory=dict)


def generate_cohort(config: PhantomConfig | Mapping[str, Any], workers: int = 1) -> PhantomCohort:
    """Generate the whole phantom cohort in the user data contract.

    ``images`` and ``labels`` are keyed by file name (the catalog's partitions):
    ``"<scan_id>.nii.gz"``, and with ``sequences`` images ``"<scan_id>_<sequence>.nii.gz"``;
    ``scans`` has the columns of :data:`SCAN_COLUMNS` and ``lesions`` the columns of
    :data:`LESION_COLUMNS`; ``ablated_images`` the lesion-ablated twins, keyed like images.
    ``workers`` > 1 renders the patients in that many processes; every patient and scan
    draws from a random stream of its own, so the cohort is the same with any number.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"demo_data.workers must be an integer >= 1, got {workers!r}")
    if not isinstance(config, PhantomConfig):
        config = PhantomConfig.from_params(config)
    anatomy = load_template_anatomy(float(config.template_spacing_mm), config.atlas)
    scans, planned = plan_cohort(config)
    logger.info(
        "Generating phantom cohort (seed %d): %d patients, %d scans, %d lesions, %d worker(s)",
        config.seed,
        scans["patient_id"].nunique(),
        len(scans),
        len(planned),
        workers,
    )
    planned_by_scan = dict(tuple(planned.groupby("scan_id", sort=False)))
    no_lesions = planned.iloc[:0]
    patients: dict[str, list[_PlannedScan]] = {}
    for scan_number, scan in enumerate(scans.itertuples(index=False)):
        patients.setdefault(scan.patient_id, []).append(
            _PlannedScan(
                scan_number,
                scan.scan_id,
                scan.diagnosis == "atrophy",
                planned_by_scan.get(scan.scan_id, no_lesions),
            )
        )
    work = {
        patient_id: (patient_number, patient_scans)
        for patient_number, (patient_id, patient_scans) in enumerate(patients.items())
    }
    rendered: dict[int, PhantomScan] = {}
    render = _PatientRenderer(config, anatomy)
    for outcome in map_as_completed(render, work, workers, None, desc="phantom patients"):
        if outcome.error is not None:
            raise RuntimeError(
                f"rendering phantom patient {outcome.key} failed: {outcome.error!r}"
            ) from outcome.error
        rendered.update(outcome.result)
    images, labels, ablated, lesion_tables = {}, {}, {}, []
    for scan_number, scan_id in enumerate(scans["scan_id"]):
        scan = rendered[scan_number]
        for sequence, image in scan.images.items():
            images[image_file_name(scan_id, sequence)] = image
        for sequence, image in scan.ablated_images.items():
            ablated[image_file_name(scan_id, sequence)] = image
        labels[image_file_name(scan_id, None)] = scan.label
        lesion_tables.append(scan.lesions)
    lesions = pd.concat(lesion_tables, ignore_index=True)
    logger.info("Phantom cohort ready: %d scans, %d lesions", len(images), len(lesions))
    return PhantomCohort(images, labels, scans, lesions, ablated)


@dataclass(frozen=True)
class _PlannedScan:
    number: int  # its place in the plan: the seed of its random stream
    scan_id: str
    atrophic: bool
    lesions: pd.DataFrame


@dataclass(frozen=True)
class _PatientRenderer:
    """One patient's scans: the anatomy drawn once (from the patient's first scan's
    diagnosis), then each scan rendered from its own stream. A class, not a closure, so a
    process pool can take it."""

    config: PhantomConfig
    anatomy: TemplateAnatomy

    def __call__(self, work: tuple[int, list[_PlannedScan]]) -> dict[int, PhantomScan]:
        patient_number, scans = work
        patient = sample_patient_anatomy(
            self.config,
            self.anatomy,
            np.random.default_rng([self.config.seed, _PATIENT_STREAM, patient_number]),
            atrophic=scans[0].atrophic,
        )
        return {
            scan.number: render_scan(
                scan.scan_id,
                scan.lesions,
                patient,
                self.anatomy,
                self.config,
                np.random.default_rng([self.config.seed, _SCAN_STREAM, scan.number]),
            )
            for scan in scans
        }
