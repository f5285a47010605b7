import numpy as np
import pandas as pd
import pytest
import torch

from mriclip.imaging.augmentation import AugmentationConfig, full_augmentation
from mriclip.text.templates import SentenceTemplates
from mriclip.training.samples import (
    AlignmentSamples,
    ScanLesions,
    cohort_patch_columns,
    cohort_templates,
    crop_with_padding,
    lesions_in_cube,
    stack_channels,
)
from tests.conftest import first_batches


def test_crop_with_padding_matches_numpy_pad():
    volume = np.arange(6 * 7 * 8, dtype=np.float32).reshape(6, 7, 8)
    padded = np.pad(volume, 5)
    for start in [(0, 0, 0), (-3, 2, 4), (4, 5, 6), (-5, -5, -5)]:
        expected = padded[tuple(slice(s + 5, s + 5 + 4) for s in start)]
        np.testing.assert_array_equal(crop_with_padding(volume, start, 4), expected)


def ball(shape, centre, radius):
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    return np.linalg.norm(grid - np.array(centre), axis=-1) <= radius


@pytest.fixture
def cohort():
    """S0: a frontal lesion (id 1) and a cerebellar one (id 2) far apart; S1: one temporal
    lesion; S2: lesion-free. Volumes are 1 in the head (everything), lesions 5."""
    shape = (40, 40, 40)
    volumes = {f"S{i}": np.ones(shape, np.float32) for i in range(3)}
    labels = {sid: np.zeros(shape, np.int16) for sid in volumes}
    rows = []
    for scan_id, lesion_id, region, centre, radius in [
        ("S0", 1, "frontal", (8, 8, 8), 3),
        ("S0", 2, "cerebellar", (31, 31, 31), 2),
        ("S1", 1, "temporal", (20, 20, 20), 2),
    ]:
        voxels = ball(shape, centre, radius)
        labels[scan_id][voxels] = lesion_id
        volumes[scan_id][voxels] = 5.0
        rows.append(
            {"scan_id": scan_id, "lesion_id": lesion_id, "region": region,
             "center_x": centre[0], "center_y": centre[1], "center_z": centre[2],
             "n_voxels": int(voxels.sum())}
        )  # fmt: skip
    scans = pd.DataFrame(
        {
            "scan_id": ["S0", "S1", "S2"],
            "age": [50, 60, 70],
            "sex": ["male", "female", "male"],
            "diagnosis": ["atrophy", "none", "none"],
            "regions": ["frontal;cerebellar", "temporal", ""],
            "lesion_regions": ["frontal;cerebellar", "temporal", ""],
            "n_lesions": [2, 1, 0],
        }
    )
    return scans, volumes, labels, pd.DataFrame(rows)


TEMPLATES = SentenceTemplates(
    columns={
        "age": ["The age of the subject is {value}."],
        "diagnosis": ["The diagnosis is {value}."],
    }
)


def patch_samples(cohort, **options):
    scans, volumes, labels, lesions = cohort
    settings = {"patch_size": 16, "jitter": 0.0, "paraphrase": False, "labels": labels}
    return AlignmentSamples(scans, volumes, lesions, TEMPLATES, **{**settings, **options})


def test_patch_sentences_describe_exactly_the_lesions_inside(cohort):
    _, volumes, labels, lesions = cohort
    samples = patch_samples(cohort, lesion_patch_fraction=0.5, patch_columns=["diagnosis"])
    by_key = {}
    for epoch in range(200):
        item = samples[(epoch, 0)]
        assert item["image"].shape == (1, 16, 16, 16)
        by_key.setdefault(item["key"], []).append(item)
        # Independent truth: the lesion voxels inside the cube, from the image itself.
        bright = (item["image"][0].numpy() == 5.0).sum()
        assert (bright > 0) == (item["key"] != "")  # no half-visible lesion described as none
    assert set(by_key) == {"frontal", "cerebellar", ""}  # 24 voxels apart: never together
    frontal = by_key["frontal"][0]["sentence"]
    assert frontal.startswith("The diagnosis is atrophy.") and "frontal" in frontal
    assert "cerebellar" not in frontal and "age" not in frontal
    assert by_key[""][0]["sentence"] == (
        "The diagnosis is atrophy. No lesion is visible in this section."
    )
    assert by_key[""][0]["content"] == by_key[""][0]["sentence"]


def test_lesions_in_cube_counts_each_lesions_voxels_inside_the_cube(cohort):
    _, _, labels, lesions = cohort
    table = lesions[lesions["scan_id"] == "S0"]
    label, arrays = labels["S0"], ScanLesions.from_table(table)
    assert arrays.regions.tolist() == ["frontal", "cerebellar"]
    np.testing.assert_array_equal(arrays.centres, [[8, 8, 8], [31, 31, 31]])
    for start, size in [((0, 0, 0), 16), ((4, 4, 4), 8), ((8, 8, 8), 8), ((-6, 26, 26), 16)]:
        inside = np.zeros_like(label, dtype=bool)
        inside[tuple(slice(max(s, 0), max(s + size, 0)) for s in start)] = True
        fractions = [
            (inside & (label == lesion_id)).sum() / n
            for lesion_id, n in zip(table["lesion_id"], table["n_voxels"], strict=True)
        ]
        visible, cut = lesions_in_cube(label, start, size, arrays, 0.5)
        np.testing.assert_array_equal(visible, [f >= 0.5 for f in fractions])
        np.testing.assert_array_equal(cut, [0 < f < 0.5 for f in fractions])


def test_lesion_patch_fraction_sets_how_often_a_lesion_is_in_view(cohort):
    for fraction in (0.0, 1.0):
        samples = patch_samples(cohort, lesion_patch_fraction=fraction, seed=3)
        keys = [samples[(epoch, 1)]["key"] for epoch in range(100)]
        if fraction == 1.0:
            assert all(key == "temporal" for key in keys)
        else:  # a 16-cube anywhere in a 40-volume mostly misses a 2-voxel lesion
            assert keys.count("") > 50
    free = patch_samples(cohort, lesion_patch_fraction=1.0)
    assert {free[(epoch, 2)]["key"] for epoch in range(20)} == {
        ""
    }  # a lesion-free scan: lesion-free cubes


def test_paraphrases_vary_but_content_does_not(cohort):
    samples = patch_samples(cohort, lesion_patch_fraction=1.0, paraphrase=True)
    items = [samples[(epoch, 1)] for epoch in range(40)]
    assert len({item["sentence"] for item in items}) > 1
    assert {item["content"] for item in items} == {
        "A tumor has been identified in the temporal area of the brain."
    }


def test_volume_mode_keeps_lesion_counts(cohort):
    scans, volumes, _, lesions = cohort
    scans = scans.assign(lesion_regions=["parietal;parietal;frontal", "temporal", ""])
    samples = AlignmentSamples(
        scans, volumes, lesions, SentenceTemplates(), mode="volume", paraphrase=False
    )
    item = samples[0]
    assert item["image"].shape == (1, 40, 40, 40)
    assert item["key"] == "frontal;parietal"
    assert "two tumors have been identified in the parietal area" in item["sentence"].lower()
    assert item["sentence"].startswith("The age of the subject is 50.")


def test_bad_inputs_are_named(cohort):
    scans, volumes, labels, lesions = cohort
    with pytest.raises(ValueError, match="mode must be one of"):
        AlignmentSamples(scans, volumes, lesions, SentenceTemplates(), mode="slices")
    with pytest.raises(ValueError, match=r"no preprocessed volume for scan\(s\) \['S9'\]"):
        AlignmentSamples(
            pd.DataFrame({"scan_id": ["S9"], "regions": [""]}),
            volumes,
            lesions,
            SentenceTemplates(),
            mode="volume",
        )
    with pytest.raises(ValueError, match=r"scan\(s\) \['S0', 'S1'\] have lesions but no"):
        AlignmentSamples(scans, volumes, lesions, SentenceTemplates())
    with pytest.raises(ValueError, match="lesion_patch_fraction"):
        patch_samples(cohort, lesion_patch_fraction=1.5)


def test_lesion_free_cubes_sit_where_lesions_of_other_scans_are(cohort):
    """Matched cubes: lesion and lesion-free cubes come from the same places in the head."""
    scans, volumes, labels, lesions = cohort
    grid = np.stack(np.meshgrid(*[np.arange(40)] * 3, indexing="ij"), axis=-1)
    volumes = {**volumes, "S2": (grid @ np.array([10000, 100, 1]) + 1).astype(np.float32)}
    samples = AlignmentSamples(
        scans, volumes, lesions, TEMPLATES, patch_size=16, jitter=0.0, paraphrase=False,
        labels=labels, lesion_patch_fraction=0.0, matched_fraction=1.0,
    )  # fmt: skip
    corners = set()
    for epoch in range(60):
        corner = int(samples[(epoch, 2)]["image"][0, 0, 0, 0]) - 1
        corners.add((corner // 10000, corner // 100 % 100, corner % 100))
    places = lesions[["center_x", "center_y", "center_z"]].to_numpy() - 8
    assert corners == {tuple(int(v) for v in place) for place in places}


def augmented_patches(cohort) -> AlignmentSamples:
    noisy = AugmentationConfig(additive_noise_prob=1.0, rotation_prob=1.0, gamma_prob=0.5)
    augment = full_augmentation(noisy, ["image"], seed=0)
    return patch_samples(cohort, jitter=0.25, paraphrase=True, augment=augment)


def test_an_item_is_a_function_of_its_key(cohort):
    samples = augmented_patches(cohort)
    first, again = samples[(3, 1)], samples[(3, 1)]
    assert torch.equal(first["image"], again["image"]) and first["sentence"] == again["sentence"]
    assert torch.equal(samples[1]["image"], samples[(0, 1)]["image"])  # an index: epoch 0
    assert not torch.equal(samples[(4, 1)]["image"], first["image"])


def test_batches_are_the_same_with_0_or_2_workers(cohort):
    """Cube, augmentation and paraphrase come from the item's key, not from the process."""
    samples = augmented_patches(cohort)

    alone, parallel = first_batches(samples, 0, 8), first_batches(samples, 2, 8)
    for one, other in zip(alone, parallel, strict=True):
        torch.testing.assert_close(one["image"], other["image"], rtol=0, atol=0)
        for key in ("sentence", "key", "content", "scan_id"):
            assert one[key] == other[key]
    # Each epoch draws other cubes and sentences for the same scans.
    assert len({float(batch["image"].sum()) for batch in alone}) == len(alone)
    assert len({sentence for batch in alone for sentence in batch["sentence"]}) > 3


def test_a_stack_of_sequences_gives_the_same_cubes_in_every_channel(cohort):
    """Stacked volumes (three sequences: the volume, twice it, its negative) give items whose
    channels are those of the single volume's item, with the position channels after them."""
    scans, volumes, labels, lesions = cohort
    stacked = {sid: np.stack([v, 2 * v, -v]) for sid, v in volumes.items()}
    assert stack_channels(stacked, sorted(stacked)) == 3
    assert stack_channels(volumes, sorted(volumes)) == 1
    single = AlignmentSamples(scans, volumes, lesions, TEMPLATES, patch_size=16, labels=labels,
                              paraphrase=False, position_channels=True)  # fmt: skip
    stack = AlignmentSamples(scans, stacked, lesions, TEMPLATES, patch_size=16, labels=labels,
                             paraphrase=False, position_channels=True)  # fmt: skip
    for key in [(0, 0), (1, 1), (0, 2)]:
        one, three = single[key], stack[key]
        assert three["image"].shape == (6, 16, 16, 16) and three["sentence"] == one["sentence"]
        image = one["image"][0]
        for channel, factor in enumerate((1, 2, -1)):
            torch.testing.assert_close(three["image"][channel], factor * image)
        torch.testing.assert_close(three["image"][3:], one["image"][1:])
    start = (-3, 30, 5)
    np.testing.assert_array_equal(
        crop_with_padding(stacked["S0"], start, 16)[1],
        2 * crop_with_padding(volumes["S0"], start, 16),
    )


def test_slip_views_of_a_stack_of_sequences_keep_every_sequence_and_the_cube_position(cohort):
    """SLIP's two views of a multi-sequence cube: every sequence channel, then the position
    channels of where the cube was cut (the item's own), on the volume's spatial grid."""
    scans, volumes, labels, lesions = cohort
    stacked = {sid: np.stack([v, 2 * v, -v]) for sid, v in volumes.items()}
    noise = full_augmentation(AugmentationConfig(additive_noise_prob=1.0), ["image"], seed=3)
    data = AlignmentSamples(scans, stacked, lesions, TEMPLATES, patch_size=16, labels=labels,
                            paraphrase=False, position_channels=True, views=noise)  # fmt: skip
    for key in [(0, 0), (1, 1), (0, 2)]:
        item = data[key]
        views = item["views"]
        assert views.shape == (2, 6, 16, 16, 16)
        for view in views:
            torch.testing.assert_close(view[3:], item["image"][3:])
        assert not torch.equal(views[0, :3], views[1, :3])  # two draws of the noise


def test_without_lesion_information_patches_are_drawn_anywhere_and_say_the_patch_columns(cohort):
    """The cohort with its lesion tables withheld: no lesion sampling, no lesion sentence
    (not even "no lesion": nothing is known), only the patch columns the cohort has."""
    scans, volumes, _, lesions = cohort
    scans = scans.drop(columns=["age"]).assign(regions="", lesion_regions="", n_lesions=0)
    kept, lacking = cohort_patch_columns(["diagnosis", "age"], scans)
    assert (kept, lacking) == (["diagnosis"], ["age"])
    templates = cohort_templates(TEMPLATES, scans)
    samples = AlignmentSamples(
        scans, volumes, lesions.iloc[:0], templates, patch_size=16, jitter=0.0,
        paraphrase=False, patch_columns=kept, lesion_patch_fraction=1.0,
    )  # fmt: skip
    items = [samples[(epoch, index)] for epoch in range(4) for index in range(3)]
    by_scan = {item["scan_id"]: item["sentence"] for item in items}
    assert by_scan == {
        "S0": "The diagnosis is atrophy.",
        "S1": "The diagnosis is none.",
        "S2": "The diagnosis is none.",
    }
    assert all(item["key"] == "" for item in items)
    whole = AlignmentSamples(scans, volumes, lesions.iloc[:0], templates, mode="volume",
                             paraphrase=False)  # fmt: skip
    assert whole[0]["sentence"] == "The diagnosis is atrophy."
