"""The phantom's parameters (:class:`PhantomConfig`, the ``demo_data`` parameters), their
checks, the default region frequencies and sequence looks, and the random streams."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mriclip.phantom.regions import ATLASES, REGIONS

#: Region frequencies of the paper's dataset; renormalised before use.
DEFAULT_REGION_FREQUENCIES = {
    "frontal": 0.31,
    "cerebellar": 0.20,
    "parietal": 0.17,
    "occipital": 0.12,
    "temporal": 0.11,
}

#: What each MRI sequence makes of the tissues and of a lesion (white matter = 1 in each):
#: ``white``, ``grey``, ``csf`` are the tissue levels the sequence is rendered with from the
#: grey/white-matter maps (CSF: the rest of the brain mask); ``rim`` and ``core`` are the
#: intensities of the lesion's rim and necrotic core, ``edema`` multiplies tissue next to
#: the rim (fading outwards; above 1: bright oedema). A look given as the name of a lesion
#: parameter (``enhancement``, ``necrosis_intensity``, ``edema_intensity``) takes that lesion's
#: drawn value, shared by every sequence. T1ce: enhancing rim, dark necrosis (the single-image
#: phantom's look); T1: no enhancement, dark necrosis; T2: bright fluid, core and oedema;
#: FLAIR: fluid suppressed, bright oedema and rim.
DEFAULT_SEQUENCE_CONTRASTS = {
    "t1": {
        "white": 1.0,
        "grey": 0.75,
        "csf": 0.3,
        "rim": 0.85,
        "core": "necrosis_intensity",
        "edema": "edema_intensity",
    },
    "t1ce": {
        "white": 1.0,
        "grey": 0.75,
        "csf": 0.3,
        "rim": "enhancement",
        "core": "necrosis_intensity",
        "edema": "edema_intensity",
    },
    "t2": {"white": 1.0, "grey": 1.4, "csf": 2.6, "rim": 1.5, "core": 2.2, "edema": 1.6},
    "flair": {"white": 1.0, "grey": 1.25, "csf": 0.25, "rim": 1.5, "core": 0.9, "edema": 1.7},
}
_TISSUE_LEVELS = ("white", "grey", "csf")
_LESION_LOOKS = ("rim", "core", "edema")
#: The lesion parameters a sequence's look may name, drawn once per lesion.
_DRAWN_LOOKS = ("enhancement", "necrosis_intensity", "edema_intensity")

#: All 48 voxel-axis orientation codes (nibabel's axcodes), e.g. "RAS", "LPS", "PIR".
ALL_ORIENTATIONS = tuple(
    "".join(pair[sign] for pair, sign in zip(ordering, signs, strict=True))
    for ordering in itertools.permutations((("L", "R"), ("P", "A"), ("I", "S")))
    for signs in itertools.product((0, 1), repeat=3)
)

# Random streams: default_rng([seed, stream, index]) gives every part its own sequence.
_PLAN_STREAM, _PATIENT_STREAM, _SCAN_STREAM, _COHORT_WARP_STREAM = 0, 1, 2, 3


@dataclass(frozen=True)
class PhantomConfig:
    """Every knob of the phantom cohort (the ``demo_data`` parameters).

    Ranges are ``[low, high]`` pairs; a value is drawn uniformly between them for each patient,
    scan or lesion (log-uniformly for ``lesion_radius_mm`` and ``intensity_scale``).
    Intensities are in units of the template's white matter (white matter = 1).
    """

    #: Seed of every random draw: same seed, byte-identical cohort.
    seed: int = 42
    #: Number of patients.
    n_patients: int = 47
    #: Total number of scans, spread over patients within ``scans_per_patient``; ``None``
    #: draws each patient's count from that range instead.
    n_scans: int | None = 77
    #: Scans (treatment courses) per patient.
    scans_per_patient: tuple[int, int] = (1, 3)
    #: Patient age in years (integer).
    age_range: tuple[int, int] = (23, 77)
    #: Probability that a patient is female (sex is "female" or "male").
    female_fraction: float = 0.5
    #: Number of lesions per scan (0 allowed: lesion-free scans).
    lesions_per_scan: tuple[int, int] = (1, 4)
    #: Fraction of scans drawn lesion-free whatever ``lesions_per_scan`` says, as real cohorts
    #: have (controls, complete responders).
    lesion_free_fraction: float = 0.1
    #: Nominal lesion radius in mm (enhancing rim included, oedema excluded), log-uniform.
    lesion_radius_mm: tuple[float, float] = (3.0, 12.0)
    #: Relative frequency of each lesion region; renormalised. Keys from :data:`REGIONS`.
    region_frequencies: Mapping[str, float] = field(
        default_factory=lambda: dict(DEFAULT_REGION_FREQUENCIES)
    )
    #: Difficulty: 1 paints lesions at the intensities below, 0 makes them invisible.
    lesion_contrast: float = 1.0
    #: Intensity of the contrast-enhancing rim.
    enhancement: tuple[float, float] = (1.5, 2.0)
    #: Intensity of the necrotic core.
    necrosis_intensity: tuple[float, float] = (0.2, 0.5)
    #: Radius of the necrotic core as a fraction of the lesion radius.
    necrotic_core_fraction: tuple[float, float] = (0.3, 0.7)
    #: Oedema multiplies the tissue intensity by this next to the lesion, fading to 1 outwards.
    edema_intensity: tuple[float, float] = (0.75, 0.9)
    #: Width of the oedema halo as a multiple of the lesion radius.
    edema_extent: tuple[float, float] = (0.5, 1.5)
    #: Relative amplitude of the smooth bumps that make lesions not perfectly spherical.
    lesion_irregularity: float = 0.15
    #: Also render each scan's lesion-ablated twin: the same draws with ``lesion_contrast`` 0
    #: (same anatomy, pose, scanner), the exact counterfactual for controls.
    ablated_twins: bool = True
    #: Fraction of patients whose ``diagnosis`` is "atrophy" (else "none"): an image-borne
    #: scan-level attribute (widened sulci and ventricles) for zero-shot targets beyond regions.
    atrophy_fraction: float = 0.3
    #: Strength of atrophy: tissue within this depth (mm) of CSF or the brain surface turns
    #: into CSF, drawn per atrophic patient.
    atrophy_mm: tuple[float, float] = (2.0, 4.0)
    #: Resolution (mm) the template is smoothed and downsampled to once, before any scan.
    template_spacing_mm: float = 2.0
    #: Voxel spacing (mm) of each scan, drawn per axis (so anisotropic) and rounded to 0.1.
    voxel_spacing_mm: tuple[float, float] = (1.5, 2.5)
    #: Voxel-axis orientation codes to draw from (e.g. ``["RAS", "LPS", "PIR"]``);
    #: ``None`` draws from all 48.
    orientations: tuple[str, ...] | None = None
    #: Empty margin (mm) around the head in the field of view.
    fov_margin_mm: float = 8.0
    #: Atlas whose labels define the lesion regions: ``aal`` or ``neuromorphometrics``
    #: (:data:`mriclip.phantom.regions.ATLASES`; their lobes' borders differ).
    atlas: str = "aal"
    #: Per-axis scaling of every head of the cohort (x, y, z), on top of each patient's own:
    #: another population's head shape.
    anatomy_scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    #: Root-mean-square length (mm) of one smooth displacement shared by every patient of the
    #: cohort (drawn from ``anatomy_warp_seed``, whatever ``seed``), on top of each patient's
    #: own: together with ``anatomy_scale``, a template unlike the ICBM152 average.
    anatomy_warp_mm: float = 0.0
    anatomy_warp_seed: int = 0
    #: Per-axis head scaling of each patient.
    scale_range: tuple[float, float] = (0.92, 1.08)
    #: Largest head rotation (degrees, about each axis) of each scan.
    rotation_deg: float = 8.0
    #: Largest head translation (mm, along each axis) of each scan.
    translation_mm: float = 8.0
    #: Root-mean-square length (mm) of each patient's elastic displacement; 0 turns it off.
    deformation_mm: float = 2.0
    #: Smoothness (mm, Gaussian sigma) of the elastic displacement.
    deformation_smoothness_mm: float = 20.0
    #: Grey matter intensity varies by up to this fraction between scans (T1 contrast).
    tissue_contrast_jitter: float = 0.08
    #: MONAI ``RandBiasField`` coefficient range (+-); roughly the standard deviation of the
    #: log bias field. 0 turns the bias field off.
    bias_field_coefficient: float = 0.1
    #: Noise standard deviation (white matter = 1) of each scan.
    noise_level: tuple[float, float] = (0.01, 0.04)
    #: "rician" (magnitude images, as scanners produce) or "gaussian".
    noise_kind: str = "rician"
    #: Stored value of white matter, per scan (log-uniform): scanners' scales differ.
    intensity_scale: tuple[float, float] = (200.0, 2000.0)
    #: Fraction of scans stored as float32; the rest are int16.
    float32_fraction: float = 0.2
    #: ``None``: one image per scan (``<scan_id>.nii.gz``: the T1 template with the T1ce lesion
    #: look). A list of names from ``sequence_contrasts`` (e.g. ``[t1, t1ce, t2, flair]``):
    #: each scan as those sequences of the same anatomy, lesions and grid
    #: (``<scan_id>_<sequence>.nii.gz``), each rendered from the tissue maps.
    sequences: tuple[str, ...] | None = None
    #: Tissue levels and lesion look of each sequence (see ``DEFAULT_SEQUENCE_CONTRASTS``).
    sequence_contrasts: Mapping[str, Mapping[str, float | str]] = field(
        default_factory=lambda: copy.deepcopy(DEFAULT_SEQUENCE_CONTRASTS)
    )

    def __post_init__(self) -> None:
        _check_count("seed", self.seed, minimum=0)
        _check_count("n_patients", self.n_patients, minimum=1)
        _check_range("scans_per_patient", self.scans_per_patient, minimum=1, integer=True)
        low, high = self.scans_per_patient
        if self.n_scans is not None:
            _check_count("n_scans", self.n_scans, minimum=1)
            if not low * self.n_patients <= self.n_scans <= high * self.n_patients:
                raise ValueError(
                    f"demo_data.n_scans={self.n_scans} cannot be spread over "
                    f"n_patients={self.n_patients} with scans_per_patient=[{low}, {high}]; "
                    f"choose n_scans between {low * self.n_patients} and "
                    f"{high * self.n_patients}, or null to draw per patient."
                )
        _check_range("age_range", self.age_range, minimum=0, integer=True)
        _check_fraction("female_fraction", self.female_fraction)
        _check_range("lesions_per_scan", self.lesions_per_scan, minimum=0, integer=True)
        _check_fraction("lesion_free_fraction", self.lesion_free_fraction)
        _check_fraction("atrophy_fraction", self.atrophy_fraction)
        _check_range("atrophy_mm", self.atrophy_mm, minimum=0)
        if not isinstance(self.ablated_twins, bool):
            raise ValueError(
                f"demo_data.ablated_twins must be true or false, got {self.ablated_twins!r}"
            )
        if self.lesions_per_scan[1] > 255:
            raise ValueError("demo_data.lesions_per_scan: at most 255 (label maps are uint8).")
        _check_range("lesion_radius_mm", self.lesion_radius_mm, minimum=0, strict=True)
        _check_region_frequencies(self.region_frequencies)
        _check_number("lesion_contrast", self.lesion_contrast, minimum=0)
        _check_range("enhancement", self.enhancement, minimum=0)
        _check_range("necrosis_intensity", self.necrosis_intensity, minimum=0)
        _check_range("necrotic_core_fraction", self.necrotic_core_fraction, 0, maximum=1)
        _check_range("edema_intensity", self.edema_intensity, minimum=0)
        _check_range("edema_extent", self.edema_extent, minimum=0)
        _check_number("lesion_irregularity", self.lesion_irregularity, minimum=0, maximum=0.5)
        _check_number("template_spacing_mm", self.template_spacing_mm, minimum=0, strict=True)
        _check_range("voxel_spacing_mm", self.voxel_spacing_mm, minimum=0.1)
        if self.orientations is not None:
            if not self.orientations:
                raise ValueError("demo_data.orientations: give at least one code, or null.")
            for code in self.orientations:
                _check_orientation_code(code)
        _check_number("fov_margin_mm", self.fov_margin_mm, minimum=0)
        _check_range("scale_range", self.scale_range, minimum=0.5, maximum=2.0)
        _check_known("atlas", [self.atlas], ATLASES, "atlas", "mriclip.phantom.regions")
        if len(self.anatomy_scale) != 3:
            raise ValueError(
                f"demo_data.anatomy_scale must be three factors (x, y, z), got "
                f"{list(self.anatomy_scale)}"
            )
        for factor in self.anatomy_scale:
            _check_number("anatomy_scale", factor, minimum=0.5, maximum=2.0)
        _check_number("anatomy_warp_mm", self.anatomy_warp_mm, minimum=0)
        _check_count("anatomy_warp_seed", self.anatomy_warp_seed, minimum=0)
        _check_number("rotation_deg", self.rotation_deg, minimum=0, maximum=45)
        _check_number("translation_mm", self.translation_mm, minimum=0)
        _check_number("deformation_mm", self.deformation_mm, minimum=0)
        _check_number(
            "deformation_smoothness_mm", self.deformation_smoothness_mm, minimum=0, strict=True
        )
        _check_number("tissue_contrast_jitter", self.tissue_contrast_jitter, 0, maximum=0.5)
        _check_number("bias_field_coefficient", self.bias_field_coefficient, minimum=0)
        _check_range("noise_level", self.noise_level, minimum=0)
        if self.noise_kind not in ("rician", "gaussian"):
            raise ValueError(
                f"demo_data.noise_kind must be 'rician' or 'gaussian', got {self.noise_kind!r}"
            )
        _check_range("intensity_scale", self.intensity_scale, minimum=0, strict=True)
        _check_fraction("float32_fraction", self.float32_fraction)
        _check_sequences(self.sequences, self.sequence_contrasts)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PhantomConfig:
        """Build from the ``demo_data`` parameters; unknown keys are rejected (typos), and
        :data:`RUN_KEYS`, which steer the run rather than the cohort, are left out."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known - set(RUN_KEYS))
        if unknown:
            raise ValueError(f"Unknown demo_data parameter(s) {unknown}; known: {sorted(known)}.")
        values = {name: value for name, value in params.items() if name not in RUN_KEYS}
        for name, value in values.items():
            # YAML gives lists; the frozen config keeps hashable tuples.
            if isinstance(value, list):
                values[name] = tuple(value)
        if "region_frequencies" in values:
            values["region_frequencies"] = dict(values["region_frequencies"])
        if "sequence_contrasts" in values:
            values["sequence_contrasts"] = {
                name: dict(look) for name, look in dict(values["sequence_contrasts"]).items()
            }
        return cls(**values)


#: ``demo_data`` keys of the run, not of the cohort: the node's refusal to overwrite another
#: cohort's files, and the processes that render the patients.
RUN_KEYS = ("overwrite_existing", "workers")


def _check_number(name, value, minimum=None, maximum=None, strict=False) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
        raise ValueError(f"demo_data.{name} must be a number, got {value!r}")
    if minimum is not None and (value <= minimum if strict else value < minimum):
        relation = ">" if strict else ">="
        raise ValueError(f"demo_data.{name} must be {relation} {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ValueError(f"demo_data.{name} must be <= {maximum}, got {value}")


def _check_count(name, value, minimum) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"demo_data.{name} must be an integer >= {minimum}, got {value!r}")


def _check_fraction(name, value) -> None:
    _check_number(name, value, minimum=0, maximum=1)


def _check_range(name, value, minimum=None, maximum=None, strict=False, integer=False) -> None:
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) != 2:
        raise ValueError(f"demo_data.{name} must be a [low, high] pair, got {value!r}")
    for bound in value:
        if integer:
            _check_count(name, bound, minimum if minimum is not None else -(2**31))
        _check_number(name, bound, minimum, maximum, strict)
    if value[0] > value[1]:
        raise ValueError(f"demo_data.{name}: low must not exceed high, got {list(value)}")


def _check_region_frequencies(frequencies: Mapping[str, float]) -> None:
    if not isinstance(frequencies, Mapping) or not frequencies:
        raise ValueError(
            f"demo_data.region_frequencies must map region names to weights, got {frequencies!r}"
        )
    _check_known("region_frequencies", frequencies, REGIONS, "region(s)", "the phantom's atlas")
    for region, weight in frequencies.items():
        _check_number(f"region_frequencies.{region}", weight, minimum=0)
    if sum(frequencies.values()) <= 0:
        raise ValueError("demo_data.region_frequencies: at least one weight must be positive.")


def _check_sequences(
    sequences: Sequence[str] | None, contrasts: Mapping[str, Mapping[str, float | str]]
) -> None:
    if not isinstance(contrasts, Mapping):
        raise ValueError(
            f"demo_data.sequence_contrasts must map sequence names to looks, got {contrasts!r}"
        )
    for name, look in contrasts.items():
        where = f"demo_data.sequence_contrasts.{name}"
        keys = (*_TISSUE_LEVELS, *_LESION_LOOKS)
        if not isinstance(look, Mapping) or set(look) != set(keys):
            raise ValueError(f"{where} must have exactly the keys {list(keys)}, got {look!r}")
        for key in _TISSUE_LEVELS:
            _check_number(f"sequence_contrasts.{name}.{key}", look[key], minimum=0)
        for key in _LESION_LOOKS:
            if isinstance(look[key], str):
                if look[key] not in _DRAWN_LOOKS:
                    raise ValueError(
                        f"{where}.{key}: {look[key]!r} is no lesion parameter; give a number "
                        f"or one of {list(_DRAWN_LOOKS)}"
                    )
            else:
                _check_number(f"sequence_contrasts.{name}.{key}", look[key], minimum=0)
    if sequences is None:
        return
    if isinstance(sequences, str) or not sequences or len(set(sequences)) != len(sequences):
        raise ValueError(
            f"demo_data.sequences must be null or a list of distinct names, got {sequences!r}"
        )
    _check_known("sequences", sequences, contrasts, "sequence(s)", "demo_data.sequence_contrasts")


def _check_known(name: str, given, known, what: str, where: str) -> None:
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise ValueError(
            f"demo_data.{name}: unknown {what} {unknown}; {where} knows {list(known)}."
        )


def _check_orientation_code(code: str) -> None:
    if code not in ALL_ORIENTATIONS:
        raise ValueError(
            f"demo_data.orientations: {code!r} is not an orientation code; use three capitals, "
            "one of L/R, one of A/P and one of S/I, e.g. 'RAS', 'LPS' or 'PIR'."
        )
