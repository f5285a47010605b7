"""The evaluation protocol on small synthetic tables, its numbers checked against sklearn."""

import numpy as np
import pandas as pd
import pytest
from scipy.special import softmax
from sklearn.metrics import average_precision_score, roc_auc_score

from mriclip.evaluation.calibration import expected_calibration_error
from mriclip.evaluation.prompts import prompt_texts
from mriclip.evaluation.protocol import (
    COMPARISONS,
    lesion_cubes,
    lesion_detection_metrics,
    retrieval_protocol,
    zero_shot_protocol,
)

REGIONS = ["frontal", "parietal", "temporal"]
SPEC = {
    "targets": {
        "regions": {
            "classes": REGIONS,
            "templates": ["a lesion in the {region} lobe"],
            "negative_templates": ["no lesion in the {region} lobe"],
            "none_templates": ["no lesion"],
        },
        "diagnosis": {
            "classes": ["glioma", "metastasis"],
            "column": "diagnosis",
            "templates": ["a scan of {value}"],
            "negative_templates": [],
        },
    }
}
PARAMS = {
    "bootstrap": {"n_resamples": 30, "confidence": 0.9},
    "calibration": {"n_bins": 5},
    "prompts": {"ensemble": True, "negative": True},
    "scan_scoring": {"aggregation": "top_k_mean", "top_k": 3, "stride": 16},
    "gap_lambdas": [0.0, 0.5],
    "n_permutations": 4,
}
DIM, N_SCANS, SEED = 6, 24, 3


def unit(matrix):
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def cohort():
    """Scans with one or two lesion regions, their lesion cubes (one per region), the scans'
    probabilities of each comparison and the prompt embeddings of both stages."""
    rng = np.random.default_rng(0)
    region_sets = [
        ";".join(sorted(rng.choice(REGIONS, size=rng.integers(1, 3), replace=False)))
        for _ in range(N_SCANS)
    ]
    sentences = pd.DataFrame(
        {
            "scan_id": [f"s{i}" for i in range(N_SCANS)],
            "patient_id": [i // 2 for i in range(N_SCANS)],
            "regions": region_sets,
            "diagnosis": rng.choice(["glioma", "metastasis"], N_SCANS),
        }
    )
    texts = prompt_texts(SPEC)
    prompts = pd.concat(
        [
            pd.concat(
                [
                    texts.assign(stage=stage, logit_scale=scale),
                    pd.DataFrame(rng.normal(size=(len(texts), DIM))).add_prefix("text_"),
                ],
                axis=1,
            )
            for stage, scale in (("aligned", 10.0), ("initial", 1.0))
        ],
        ignore_index=True,
    )
    probability = ["prob_frontal", "prob_parietal", "prob_temporal", "prob_glioma",
                   "prob_metastasis"]  # fmt: skip
    scans, cubes = [], []
    for stage, variant in COMPARISONS.values():
        values = rng.random((N_SCANS, len(probability)))
        table = pd.DataFrame(values, columns=probability)
        raw = pd.DataFrame(rng.random(values.shape), columns=[f"raw_{c}" for c in probability])
        scans.append(
            pd.concat(
                [sentences[["scan_id"]].assign(stage=stage, variant=variant), table, raw], axis=1
            )  # fmt: skip
        )
        for scan_id, keys in zip(sentences["scan_id"], region_sets, strict=True):
            for key in keys.split(";"):
                cubes.append(
                    {"level": "lesion", "stage": stage, "variant": variant, "scan_id": scan_id,
                     "key": key, **{f"image_{d}": rng.normal() for d in range(DIM)},
                     **{f"text_{d}": rng.normal() for d in range(DIM)}}
                )  # fmt: skip
    return sentences, prompts, pd.concat(scans, ignore_index=True), pd.DataFrame(cubes)


def patches(rng, n=80):
    keys = rng.choice(["", "", "frontal", "parietal;temporal"], n)
    return pd.DataFrame(
        {
            "scan_id": [f"s{i % N_SCANS}" for i in range(n)],
            "stage": "aligned",
            "variant": "original",
            "key": keys,
            "cut": (keys == "") & (rng.random(n) < 0.2),
            "lesion_evidence": rng.random(n),
        }
    )


def stage_rows(table, comparison):
    stage, variant = COMPARISONS[comparison]
    return table[(table["stage"] == stage) & (table["variant"] == variant)]


def region_labels(keys):
    return np.array([[region in key.split(";") for region in REGIONS] for key in keys], int)


def test_lesion_detection_is_sklearns_auc_over_the_patches_that_are_lesion_or_clear():
    table = patches(np.random.default_rng(1))
    groups = [f"p{i % 7}" for i in range(len(table))]
    result = lesion_detection_metrics(table, groups, PARAMS, SEED)
    keep = ~table["cut"].to_numpy()
    truth = table["key"].to_numpy()[keep] != ""
    expected = roc_auc_score(truth, table["lesion_evidence"].to_numpy()[keep])
    assert result["auc"] == pytest.approx(expected)
    assert result["auc_ci"][0] <= result["auc"] <= result["auc_ci"][1]
    assert result["n_excluded"] == int(table["cut"].sum())
    assert (result["n_positive"], result["n_negative"]) == (truth.sum(), (~truth).sum())


def test_lesion_detection_without_lesion_patches_is_skipped_with_its_counts():
    table = patches(np.random.default_rng(2)).assign(key="")
    result = lesion_detection_metrics(table, ["p"] * len(table), PARAMS, SEED)
    assert "skipped" in result and "auc" not in result
    assert result["n_positive"] == 0


def test_lesion_cubes_are_the_softmax_of_their_cosines_to_the_region_prompts(cohort):
    _, prompts, _, cubes = cohort
    rows, scores, labels = lesion_cubes(
        cubes, prompts, REGIONS, "aligned", "original", True, softmax=True
    )
    aligned = prompts[(prompts["stage"] == "aligned") & (prompts["kind"] == "positive")]
    aligned = aligned[aligned["target"] == "regions"]
    text = unit(aligned.filter(like="text_").to_numpy())
    image = unit(rows.filter(like="image_").to_numpy())
    np.testing.assert_allclose(scores, softmax(10.0 * image @ text.T, axis=1))
    np.testing.assert_array_equal(labels, region_labels(rows["key"]))
    _, cosines, _ = lesion_cubes(cubes, prompts, REGIONS, "aligned", "original", True)
    np.testing.assert_allclose(cosines, image @ text.T)


def test_zero_shot_protocol_scores_each_comparison_as_sklearn_does(cohort):
    sentences, prompts, scans, cubes = cohort
    detection = patches(np.random.default_rng(3))
    result = zero_shot_protocol(
        cubes, cubes, prompts, scans, detection, SPEC, sentences, REGIONS, PARAMS, SEED
    )
    assert list(result) == [
        "prompts", "environment", "scan_level", "targets", "skipped", "lesion_level",
        "lesion_detection",
    ]  # fmt: skip
    assert result["skipped"] == {}
    scan_level = result["scan_level"]
    assert set(scan_level) == {*COMPARISONS, "random"}
    for comparison in COMPARISONS:
        rows = stage_rows(scans, comparison)
        truth = region_labels(sentences.set_index("scan_id").loc[rows["scan_id"], "regions"])
        probabilities = rows[[f"prob_{r}" for r in REGIONS]].to_numpy()
        aucs = [roc_auc_score(truth[:, i], probabilities[:, i]) for i in range(len(REGIONS))]
        overall = scan_level[comparison]["overall"]
        assert overall["auc_macro"] == pytest.approx(np.mean(aucs))
        assert overall["ece"] == pytest.approx(expected_calibration_error(probabilities, truth, 5))
        assert "auc_macro_ci" in overall
    model = stage_rows(scans, "model")
    truth = region_labels(sentences["regions"])
    raw = model[[f"raw_prob_{r}" for r in REGIONS]].to_numpy()
    assert scan_level["model"]["overall"]["ece_uncalibrated"] == pytest.approx(
        expected_calibration_error(raw, truth, 5)
    )
    diagnosis = result["targets"]["diagnosis"]["model"]
    glioma = (sentences["diagnosis"] == "glioma").to_numpy()
    expected = roc_auc_score(glioma, model["prob_glioma"].to_numpy())
    assert diagnosis["per_region"]["glioma"]["auc"] == pytest.approx(expected)
    lesion_level = result["lesion_level"]
    assert set(lesion_level) == {*COMPARISONS, "random", "gap_sweep"}
    _, scores, labels = lesion_cubes(cubes, prompts, REGIONS, "initial", "original", True, True)
    expected = np.mean([roc_auc_score(labels[:, i], scores[:, i]) for i in range(len(REGIONS))])
    assert lesion_level["before_alignment"]["overall"]["auc_macro"] == pytest.approx(expected)
    assert set(result["lesion_detection"]) == {"model", "random"}


def test_retrieval_protocol_ranks_scans_and_cubes_as_sklearns_average_precision(cohort):
    sentences, prompts, scans, cubes = cohort
    result = retrieval_protocol(cubes, prompts, scans, SPEC, sentences, REGIONS, PARAMS, SEED)
    assert list(result) == ["scan_level", "targets", "lesion_level"]
    for level in (result["scan_level"], result["lesion_level"], result["targets"]["diagnosis"]):
        assert set(level) == {"model", "lesion_ablated", "random", "shuffled"}
    # clinical targets are retrieved too: scans ranked by their probability of each class
    model = stage_rows(scans, "model")
    glioma = sentences.set_index("scan_id").loc[model["scan_id"], "diagnosis"] == "glioma"
    expected = average_precision_score(glioma.to_numpy(), model["prob_glioma"])
    got = result["targets"]["diagnosis"]["model"]["per_region"]["glioma"]["average_precision"]
    assert got == pytest.approx(expected)
    rows = stage_rows(scans, "lesion_ablated")
    truth = region_labels(sentences.set_index("scan_id").loc[rows["scan_id"], "regions"])
    for index, region in enumerate(REGIONS):
        expected = average_precision_score(truth[:, index], rows[f"prob_{region}"])
        got = result["scan_level"]["lesion_ablated"]["per_region"][region]["average_precision"]
        assert got == pytest.approx(expected)
    _, cosines, labels = lesion_cubes(cubes, prompts, REGIONS, "aligned", "original", True)
    expected = np.mean(
        [average_precision_score(labels[:, i], cosines[:, i]) for i in range(len(REGIONS))]
    )
    got = result["lesion_level"]["model"]["overall"]["average_precision"]
    assert got == pytest.approx(expected)


def test_without_lesion_information_only_the_clinical_targets_are_scored(cohort):
    """No regions target (a cohort without lesion information): the lesion level, detection
    and lesion-ablated controls are skipped with one line each; diagnosis is scored and
    retrieved."""
    sentences, prompts, scans, cubes = cohort
    spec = {
        "targets": {"diagnosis": SPEC["targets"]["diagnosis"]},
        "skipped": {"target regions": "no lesion information"},
    }
    detection = patches(np.random.default_rng(3))
    result = zero_shot_protocol(
        cubes, cubes, prompts, scans, detection, spec, sentences, REGIONS, PARAMS, SEED
    )
    assert set(result) == {"prompts", "environment", "targets", "skipped"}
    assert set(result["skipped"]) == {
        "target regions", "lesion level", "lesion detection", "lesion-ablated controls",
    }  # fmt: skip
    model = stage_rows(scans, "model")
    glioma = sentences.set_index("scan_id").loc[model["scan_id"], "diagnosis"] == "glioma"
    expected = roc_auc_score(glioma.to_numpy(), model["prob_glioma"].to_numpy())
    got = result["targets"]["diagnosis"]["model"]["per_region"]["glioma"]["auc"]
    assert got == pytest.approx(expected)
    retrieval = retrieval_protocol(cubes, prompts, scans, spec, sentences, REGIONS, PARAMS, SEED)
    assert list(retrieval) == ["targets"]


def test_without_twins_the_lesion_ablated_controls_are_skipped_with_one_line(cohort):
    sentences, prompts, scans, cubes = cohort
    scans = scans[scans["variant"] != "lesion_ablated"]
    detection = patches(np.random.default_rng(3))
    result = zero_shot_protocol(
        cubes, cubes, prompts, scans, detection, SPEC, sentences, REGIONS, PARAMS, SEED
    )
    assert list(result["skipped"]) == ["lesion-ablated controls"]
    assert "lesion_ablated" not in result["scan_level"]
