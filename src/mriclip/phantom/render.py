"""One scan rendered: a scanner grid and head pose, the patient's anatomy warped onto the
grid, the planned lesions painted, the scanner's bias field, scale and noise, and the
NIfTI images it is stored as."""

from __future__ import annotations

import copy
import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pandas as pd
from monai.transforms import RandBiasField, Resize
from scipy import ndimage
from scipy.spatial.transform import Rotation

from mriclip.phantom.anatomy import PatientAnatomy, atrophied_intensities, atrophied_tissue
from mriclip.phantom.atlas import _BRAIN_THRESHOLD, TemplateAnatomy
from mriclip.phantom.config import ALL_ORIENTATIONS, PhantomConfig
from mriclip.phantom.lesions import _choose_centre, paint_lesion
from mriclip.phantom.regions import SIDES


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
