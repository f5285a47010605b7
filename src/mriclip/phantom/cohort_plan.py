"""The cohort's plan, before any volume exists: patients, their scans (treatment courses)
and each scan's lesions with region and radius."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd

from mriclip.phantom.config import _PLAN_STREAM, PhantomConfig, _check_region_frequencies
from mriclip.phantom.regions import REGIONS


def sample_lesion_regions(
    rng: np.random.Generator, count: int, frequencies: Mapping[str, float]
) -> np.ndarray:
    """Draw ``count`` region names with the given (renormalised) relative frequencies."""
    _check_region_frequencies(frequencies)
    names = [region for region in REGIONS if region in frequencies]
    weights = np.array([frequencies[region] for region in names], dtype=float)
    return rng.choice(np.array(names, dtype=object), size=count, p=weights / weights.sum())


#: Columns of the phantom's scans table.
SCAN_COLUMNS = ["scan_id", "patient_id", "age", "sex", "course", "diagnosis"]


def plan_cohort(config: PhantomConfig) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Who is scanned when, with which lesions: the cohort's tables before any volume exists.

    Returns the scans table (``scan_id, patient_id, age, sex, course, diagnosis``; diagnosis is
    "atrophy" or "none", per patient) and the planned lesions
    (``scan_id, lesion_id, region, radius_mm``), lesion ids numbered 1..k within each scan.
    """
    rng = np.random.default_rng([config.seed, _PLAN_STREAM])
    scan_counts = _scans_per_patient(rng, config)
    digits = max(3, len(str(config.n_patients)))
    ages = rng.integers(config.age_range[0], config.age_range[1] + 1, size=config.n_patients)
    females = rng.random(config.n_patients) < config.female_fraction
    scan_rows = []
    for number in range(config.n_patients):
        patient_id = f"P{number + 1:0{digits}d}"
        for course in range(1, scan_counts[number] + 1):
            scan_rows.append(
                {
                    "scan_id": f"{patient_id}_S{course}",
                    "patient_id": patient_id,
                    "age": int(ages[number]),
                    "sex": "female" if females[number] else "male",
                    "course": course,
                }
            )
    scans = pd.DataFrame(scan_rows, columns=SCAN_COLUMNS[:-1])
    # Draws added after the first release come from their own stream, so the rest of the
    # plan (ages, lesion counts, regions) stays what it was for a seed.
    extra = np.random.default_rng([config.seed, _PLAN_STREAM, 1])
    atrophic = extra.random(config.n_patients) < config.atrophy_fraction
    diagnosis = dict(zip(scans["patient_id"].unique(), atrophic, strict=True))
    scans["diagnosis"] = ["atrophy" if diagnosis[p] else "none" for p in scans["patient_id"]]

    low, high = config.lesions_per_scan
    lesion_counts = rng.integers(low, high + 1, size=len(scans))
    lesion_counts[extra.random(len(scans)) < config.lesion_free_fraction] = 0
    total = int(lesion_counts.sum())
    regions = sample_lesion_regions(rng, total, config.region_frequencies)
    log_low, log_high = np.log(config.lesion_radius_mm)
    radii = np.exp(rng.uniform(log_low, log_high, size=total))
    lesions = pd.DataFrame(
        {
            "scan_id": np.repeat(scans["scan_id"].to_numpy(), lesion_counts),
            "lesion_id": np.concatenate([np.arange(1, n + 1) for n in lesion_counts]),
            "region": regions,
            "radius_mm": np.round(radii, 1),
        }
    )
    lesions["lesion_id"] = lesions["lesion_id"].astype(int)
    lesions["region"] = lesions["region"].astype(str)
    return scans, lesions


def _scans_per_patient(rng: np.random.Generator, config: PhantomConfig) -> np.ndarray:
    low, high = config.scans_per_patient
    if config.n_scans is None:
        return rng.integers(low, high + 1, size=config.n_patients)
    # Every patient gets `low` scans; the remaining scans fill randomly chosen free slots
    # (each patient has high - low of them), which hits n_scans exactly.
    counts = np.full(config.n_patients, low)
    free_slots = np.repeat(np.arange(config.n_patients), high - low)
    chosen = rng.choice(free_slots, size=config.n_scans - counts.sum(), replace=False)
    np.add.at(counts, chosen, 1)
    return counts
