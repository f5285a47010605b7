import nibabel as nib
import numpy as np
import pytest
from scipy.special import softmax

from mriclip.evaluation.prompts import class_embeddings, ensemble_embedding, prompt_texts
from mriclip.evaluation.scan_scoring import (
    ScanScorer,
    aggregate_patches,
    evidence_map,
    patch_class_probabilities,
    patch_grid,
    probability_columns,
    resample_to_grid,
)

PROBABILITIES = np.array([[0.1, 0.9], [0.5, 0.2], [0.3, 0.4], [0.8, 0.1]])


def test_aggregations_against_a_hand_computation():
    assert aggregate_patches(PROBABILITIES, "max").tolist() == [0.8, 0.9]
    assert aggregate_patches(PROBABILITIES, "mean") == pytest.approx([0.425, 0.4])
    # top-2 mean: (0.8 + 0.5) / 2 and (0.9 + 0.4) / 2
    assert aggregate_patches(PROBABILITIES, "top_k_mean", 2) == pytest.approx([0.65, 0.65])
    # noisy-OR: 1 - 0.9 * 0.5 * 0.7 * 0.2 and 1 - 0.1 * 0.8 * 0.6 * 0.9
    assert aggregate_patches(PROBABILITIES, "noisy_or") == pytest.approx([0.937, 0.9568])
    assert aggregate_patches(PROBABILITIES, "top_k_mean", 10) == pytest.approx([0.425, 0.4])
    with pytest.raises(ValueError, match="aggregation"):
        aggregate_patches(PROBABILITIES, "median")


def test_ensemble_embedding_is_the_renormalised_mean_of_unit_phrasings():
    phrasings = np.array([[3.0, 0.0, 0.0], [0.0, 0.5, 0.0]])
    manual = np.array([0.5, 0.5, 0.0]) / np.linalg.norm([0.5, 0.5, 0.0])
    np.testing.assert_allclose(ensemble_embedding(phrasings), manual)
    np.testing.assert_allclose(ensemble_embedding(phrasings, ensemble=False), [1.0, 0.0, 0.0])


def spec():
    return {
        "targets": {
            "regions": {
                "kind": "lesion",
                "classes": ["frontal", "occipital"],
                "templates": ["A lesion in the {region} lobe.", "Tumour: {region}."],
                "negative_templates": ["No lesion in the {region} lobe."],
                "none_templates": ["No lesion."],
            },
            "diagnosis": {
                "kind": "scan",
                "column": "diagnosis",
                "classes": ["atrophy", "none"],
                "templates": ["The diagnosis is {value}."],
                "negative_templates": [],
            },
        }
    }


def test_prompt_texts_and_class_embeddings_follow_the_spec():
    texts = prompt_texts(spec())
    assert "A lesion in the frontal lobe." in set(texts["text"])
    assert set(texts.loc[texts["kind"] == "none", "text"]) == {"No lesion."}
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(len(texts), 4))
    frontal = texts.index[(texts["class"] == "frontal") & (texts["kind"] == "positive")]
    embedded = class_embeddings(texts, vectors, "regions", "positive", ensemble=True)
    np.testing.assert_allclose(embedded[0], ensemble_embedding(vectors[frontal]))
    assert probability_columns(spec())[("diagnosis", "none")] == "prob_none"
    shared = spec()
    shared["targets"]["diagnosis"]["classes"] = ["frontal", "none"]
    assert probability_columns(shared)[("diagnosis", "frontal")] == "prob_diagnosis_frontal"


def test_patch_probabilities_are_a_softmax_over_classes_and_no_lesion():
    rng = np.random.default_rng(1)
    patches, classes, none = rng.normal(size=(5, 4)), rng.normal(size=(2, 4)), rng.normal(size=4)
    probabilities, p_none = patch_class_probabilities(patches, classes, 10.0, none)
    unit = lambda m: m / np.linalg.norm(m, axis=-1, keepdims=True)  # noqa: E731
    expected = softmax(10.0 * unit(patches) @ unit(np.vstack([classes, none])).T, axis=1)
    np.testing.assert_allclose(probabilities, expected[:, :2])
    np.testing.assert_allclose(p_none, expected[:, 2])
    negatives = rng.normal(size=(2, 4))
    paired, _ = patch_class_probabilities(patches, classes, 10.0, none, negatives)
    pos, neg = unit(patches) @ unit(classes).T, unit(patches) @ unit(negatives).T
    np.testing.assert_allclose(paired, 1 / (1 + np.exp(-10.0 * (pos - neg))))


def test_scorer_combines_probabilities_and_aggregation():
    texts = prompt_texts(spec())
    vectors = np.random.default_rng(2).normal(size=(len(texts), 4))
    patches = np.random.default_rng(3).normal(size=(6, 4))
    scorer = ScanScorer(spec(), texts, vectors, 5.0, aggregation="max", target_aggregation="mean")
    probabilities, evidence = scorer.patch_probabilities(patches)
    scores, any_lesion = scorer.scan_scores(probabilities, evidence)
    np.testing.assert_allclose(scores["regions"], probabilities["regions"].max(axis=0))
    np.testing.assert_allclose(scores["diagnosis"], probabilities["diagnosis"].mean(axis=0))
    np.testing.assert_allclose(probabilities["diagnosis"].sum(axis=1), 1.0)
    assert any_lesion == pytest.approx(evidence.max())
    assert np.all((evidence >= 0) & (evidence <= 1))


def test_patch_grid_covers_the_volume_and_drops_background_patches():
    starts = patch_grid((40, 40, 40), 16, 12)
    assert sorted(set(starts[:, 0])) == [0, 12, 24]  # the last patch is flush with the end
    foreground = np.zeros((40, 40, 40), bool)
    foreground[:16, :16, :16] = True
    kept = patch_grid((40, 40, 40), 16, 12, foreground, 0.5)
    assert kept.tolist() == [[0, 0, 0]]
    with pytest.raises(ValueError, match="do not fit"):
        patch_grid((10, 40, 40), 16, 8)


def test_evidence_map_blends_overlapping_patches():
    starts = np.array([[0, 0, 0], [8, 0, 0]])
    blended = evidence_map((24, 16, 16), starts, 16, np.array([1.0, 0.0]))
    assert blended[2, 8, 8] == pytest.approx(1.0)  # covered by the first patch only
    assert blended[20, 8, 8] == pytest.approx(0.0)
    assert 0.0 < blended[12, 8, 8] < 1.0  # both: a weighted mean
    two = evidence_map((24, 16, 16), starts, 16, np.array([[1.0, 0.5], [0.0, 0.5]]))
    assert two.shape == (2, 24, 16, 16) and np.allclose(two[1][blended > -1], 0.5)


def test_evidence_map_is_zero_outside_the_head_and_unchanged_inside():
    starts = np.array([[0, 0, 0], [8, 0, 0]])
    values = np.array([[0.9, 0.2], [0.4, 0.7]])
    head = np.zeros((24, 16, 16), bool)
    head[4:20, 2:14, 3:13] = True
    free = evidence_map((24, 16, 16), starts, 16, values)
    masked = evidence_map((24, 16, 16), starts, 16, values, foreground=head)
    np.testing.assert_array_equal(masked[:, head], free[:, head])
    assert np.all(masked[:, ~head] == 0) and np.all(free[:, ~head] > 0)


def test_resampling_to_the_input_grid_puts_values_where_the_affines_say():
    # The preprocessed grid: 2 mm voxels, shifted; the input: 1 mm voxels, flipped x axis.
    source_affine = np.diag([2.0, 2.0, 2.0, 1.0])
    source_affine[:3, 3] = [-10, -10, -10]
    volume = np.zeros((10, 10, 10), np.float32)
    volume[7, 2, 5] = 1.0  # world mm (4, -6, 0)
    target_affine = np.diag([-1.0, 1.0, 1.0, 1.0])
    target_affine[:3, 3] = [10, -10, -10]
    mapped = resample_to_grid(volume, source_affine, (20, 20, 20), target_affine)
    peak = np.unravel_index(np.argmax(mapped), mapped.shape)
    world = nib.affines.apply_affine(target_affine, peak)
    np.testing.assert_allclose(world, [4, -6, 0])
    assert mapped.min() == 0.0


def test_resampling_channels_at_once_matches_scipy_channel_by_channel():
    from scipy import ndimage

    rng = np.random.default_rng(0)
    maps = rng.random((3, 12, 14, 10)).astype(np.float32)
    source_affine = np.diag([3.0, 3.0, 3.0, 1.0])
    source_affine[:3, 3] = [-15, -20, -12]
    angle = 0.3  # an oblique, flipped input grid
    rotation = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0],
                         [0, 0, 1]])  # fmt: skip
    target_affine = np.eye(4)
    target_affine[:3, :3] = rotation @ np.diag([2.0, 1.5, -2.5])
    target_affine[:3, 3] = [-12, -16, 10]
    mapped = resample_to_grid(maps, source_affine, (17, 23, 11), target_affine)
    matrix = np.linalg.inv(source_affine) @ target_affine
    expected = np.stack([
        ndimage.affine_transform(channel, matrix[:3, :3], offset=matrix[:3, 3],
                                 output_shape=(17, 23, 11), order=1, mode="constant")
        for channel in maps
    ])  # fmt: skip
    inside = (expected != 0).all(axis=0)
    assert inside.mean() > 0.3  # the comparison covers much of the grid
    np.testing.assert_allclose(mapped[:, inside], expected[:, inside], atol=1e-5)
    one = resample_to_grid(maps[1], source_affine, (17, 23, 11), target_affine)
    np.testing.assert_array_equal(one, mapped[1])
