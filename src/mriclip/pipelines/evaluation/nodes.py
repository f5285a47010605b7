"""Thin nodes of the evaluation pipeline: embeddings once, then scores, metrics, figures.

Levels: ``scan`` (what a user gets on a new scan: patches over the whole brain, scored against
every prompt and aggregated; labels = all regions of the scan) and ``lesion`` (the paper's
protocol: a cube centred on each annotated lesion, label = its region). Stages: ``aligned``
(the trained model) and ``initial`` (the same model before alignment). Variants: ``original``
and ``lesion_ablated`` (the same test scans without their lesions: every metric's control).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from mriclip.evaluation.baselines import fusion_classifier, linear_probe
from mriclip.evaluation.bootstrap import with_bootstrap_intervals
from mriclip.evaluation.calibration import apply_calibration, expected_calibration_error
from mriclip.evaluation.embedding import (
    embed_dataset,
    embed_patches,
    label_matrix,
    patch_lesion_truth,
    scan_patches,
)
from mriclip.evaluation.embedding_tables import (
    ABLATED,
    ORIGINAL,
    embedding_matrix,
    patient_ids,
    select_embeddings,
)
from mriclip.evaluation.modality_gap import zero_shot_gap_sweep
from mriclip.evaluation.plots import (
    evidence_figure,
    retrieval_grid,
    roc_curves,
    training_curves,
    tsne_before_after,
)
from mriclip.evaluation.prompts import (
    REGIONS_TARGET,
    class_embeddings,
    prompt_texts,
    zero_shot_spec,
)
from mriclip.evaluation.rank_metrics import roc_auc
from mriclip.evaluation.retrieval import (
    permutation_baseline,
    ranking_metrics,
    retrieval_random_baseline,
    single_class_reason,
)
from mriclip.evaluation.scan_calibration import target_labels
from mriclip.evaluation.scan_scoring import (
    ScanScorer,
    evidence_map,
    probability_columns,
    score_columns,
)
from mriclip.evaluation.zero_shot import (
    zero_shot_metrics,
    zero_shot_random_baseline,
    zero_shot_scores,
)
from mriclip.models.factory import (
    create_clip_model,
    embed_texts,
    initial_image_encoder,
    load_clip_model,
)
from mriclip.text.templates import SentenceTemplates
from mriclip.training.runtime import compute_environment, pick_device, seed_everything
from mriclip.training.samples import (
    AlignmentSamples,
    LesionPatches,
    VolumeSource,
    is_foreground,
    reference_channel,
    spatial_shape,
    stack_channels,
)

logger = logging.getLogger(__name__)
LEVELS = ("scan", "lesion")
#: Which embeddings each comparison of a level uses: (stage, variant).
COMPARISONS = {
    "model": ("aligned", ORIGINAL),
    "lesion_ablated": ("aligned", ABLATED),
    "before_alignment": ("initial", ORIGINAL),
}


# --- embeddings --------------------------------------------------------------------------------


def _embedding_rows(embedded: dict, level: str, split: str, stage: str, variant: str):
    table = pd.DataFrame(
        {
            "level": level,
            "split": split,
            "stage": stage,
            "variant": variant,
            "scan_id": embedded["scan_ids"],
            "key": embedded["keys"],
            "sentence": embedded["sentences"],
        }
    )
    image = pd.DataFrame(embedded["image"]).add_prefix("image_")
    text = pd.DataFrame(embedded["text"]).add_prefix("text_")
    return pd.concat([table, image, text], axis=1)


def _embed_levels(
    model, scans, volumes, lesion_table, templates, patch_size, split, stage, variant
):
    """Whole-volume (scan level) and lesion-cube (lesion level) embeddings of ``scans``."""
    scans = scans[[scan_id in volumes for scan_id in scans["scan_id"]]]
    if scans.empty:
        return []
    position = model.image_encoder.position_channels
    volume_items = AlignmentSamples(
        scans,
        volumes,
        lesion_table,
        templates,
        mode="volume",
        paraphrase=False,
        position_channels=position,
    )
    tables = [_embedding_rows(embed_dataset(model, volume_items), "scan", split, stage, variant)]
    lesions = lesion_table[lesion_table["scan_id"].isin(set(scans["scan_id"]))]
    if len(lesions):
        patches = LesionPatches(lesions, scans, volumes, templates, patch_size, position)
        tables.append(
            _embedding_rows(embed_dataset(model, patches), "lesion", split, stage, variant)
        )
    return tables


def _patch_rows(model, scans, volumes, labels, lesion_table, alignment, scoring, stage, variant):
    """Grid patches of each scan (the grid of its original volume) with their lesion truth."""
    tables = []
    patch_size = alignment["patch_size"]
    for scan_id in tqdm(list(scans["scan_id"]), desc=f"patches {stage}/{variant}", disable=None):
        if scan_id not in volumes[variant]:
            continue
        original = np.asarray(volumes[ORIGINAL][scan_id])
        starts = scan_patches(
            original, patch_size, scoring["stride"], scoring["min_foreground_fraction"]
        )
        size = min(patch_size, *spatial_shape(original))
        vectors = embed_patches(
            model, np.asarray(volumes[variant][scan_id]), starts, size, scoring["batch_size"]
        )
        keys, cuts = patch_lesion_truth(
            np.asarray(labels[scan_id]) if scan_id in labels else None,
            starts,
            size,
            lesion_table[lesion_table["scan_id"] == scan_id],
            alignment["min_visible_fraction"],
        )
        table = pd.DataFrame(
            {
                "scan_id": scan_id,
                "stage": stage,
                "variant": variant,
                "patch": np.arange(len(starts)),
                "x": starts[:, 0],
                "y": starts[:, 1],
                "z": starts[:, 2],
                "patch_size": size,
                "key": keys,
                "cut": cuts,
            }
        )
        tables.append(pd.concat([table, pd.DataFrame(vectors).add_prefix("image_")], axis=1))
    return tables


def embed_for_evaluation(
    clip_model: dict,
    pretrained_encoder: dict | None,
    scan_sentences: pd.DataFrame,
    splits: pd.DataFrame,
    preprocessed_volumes: dict,
    preprocessed_labels: dict,
    lesion_ablated_volumes: dict,
    lesion_table: pd.DataFrame,
    sentences: dict,
    regions: list[str],
    alignment: dict,
    evaluation: dict,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame, dict]:
    """Embeddings of test items (aligned model on the scans and on their lesion-ablated
    twins; the model before alignment), of training items, of the test scans' grid patches,
    and of every zero-shot prompt of both stages; plus the zero-shot spec they answer."""
    templates = SentenceTemplates.from_params(sentences)
    by_split = {
        split: scan_sentences[
            scan_sentences["scan_id"].isin(set(splits.loc[splits["split"] == split, "scan_id"]))
        ]
        for split in ("train", "test")
    }
    device = pick_device(alignment["training"]["device"])
    aligned = load_clip_model(clip_model).to(device)
    seed_everything(seed)  # the alignment node built its initial model right after this seed
    initial = create_clip_model(
        initial_image_encoder(
            alignment["image_init"],
            alignment["image_encoder"],
            pretrained_encoder,
            stack_channels(preprocessed_volumes, sorted(preprocessed_volumes)),
        ),
        alignment["text_encoder"],
        alignment["clip"],
    ).to(device)
    volumes = {
        ORIGINAL: VolumeSource(preprocessed_volumes),
        ABLATED: VolumeSource(lesion_ablated_volumes),
    }
    labels = VolumeSource(preprocessed_labels)
    runs = [("aligned", ORIGINAL, aligned), ("aligned", ABLATED, aligned)]
    runs.append(("initial", ORIGINAL, initial))
    level_args = (lesion_table, templates, alignment["patch_size"])
    test, patches = [], []
    for stage, variant, model in runs:
        test += _embed_levels(model, by_split["test"], volumes[variant], *level_args, "test",
                              stage, variant)  # fmt: skip
        patches += _patch_rows(
            model, by_split["test"], volumes, labels, lesion_table, alignment,
            evaluation["scan_scoring"], stage, variant,
        )  # fmt: skip
    train = _embed_levels(
        aligned, by_split["train"], volumes[ORIGINAL], *level_args, "train", "aligned", ORIGINAL
    )
    spec = zero_shot_spec(regions, sentences, evaluation, by_split["train"])
    texts = prompt_texts(spec)
    prompt_rows = []
    for stage, model in (("aligned", aligned), ("initial", initial)):
        vectors = pd.DataFrame(embed_texts(model, list(texts["text"])).numpy()).add_prefix("text_")
        logit_scale = float(model.logit_scale.detach())
        prompt_rows.append(
            pd.concat([texts.assign(stage=stage, logit_scale=logit_scale), vectors], axis=1)
        )
    return (
        pd.concat(test, ignore_index=True),
        pd.concat(train, ignore_index=True),
        pd.concat(patches, ignore_index=True),
        pd.concat(prompt_rows, ignore_index=True),
        spec,
    )


# --- selecting ---------------------------------------------------------------------------------


def _stage_prompts(prompt_embeddings: pd.DataFrame, stage: str) -> tuple[pd.DataFrame, np.ndarray]:
    rows = prompt_embeddings[prompt_embeddings["stage"] == stage].reset_index(drop=True)
    return rows, embedding_matrix(rows, "text")


def _logit_scale(stage_prompts: pd.DataFrame) -> float:
    """The logit scale of the model that embedded these prompts (one stage's rows)."""
    return float(stage_prompts["logit_scale"].iloc[0])


def _region_prompts(prompt_embeddings: pd.DataFrame, stage: str, ensemble: bool) -> np.ndarray:
    rows, vectors = _stage_prompts(prompt_embeddings, stage)
    return class_embeddings(rows, vectors, REGIONS_TARGET, "positive", ensemble)


def _lesion_cubes(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    regions: list[str],
    stage: str,
    variant: str,
    ensemble: bool,
    softmax: bool = False,
) -> tuple[pd.DataFrame, np.ndarray | None, np.ndarray | None]:
    """The lesion-level cubes of a stage and variant, their scores against the region prompts
    (cosines, or with ``softmax`` the reference's softmax over regions at the stage's logit
    scale) and their labels (None, None when there are none)."""
    rows = select_embeddings(test_embeddings, stage, variant, "lesion")
    if rows.empty:
        return rows, None, None
    logit_scale = _logit_scale(_stage_prompts(prompt_embeddings, stage)[0]) if softmax else None
    scores = zero_shot_scores(
        embedding_matrix(rows, "image"),
        _region_prompts(prompt_embeddings, stage, ensemble),
        logit_scale,
    )
    return rows, scores, label_matrix(rows["key"], regions)


# --- scores ------------------------------------------------------------------------------------


def score_test_scans(
    patch_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    zero_shot_spec: dict,
    clip_model: dict,
    params: dict,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Per patch and per scan, every class's zero-shot probability and the lesion evidence,
    for each stage and variant (``evaluation.prompts`` and ``evaluation.scan_scoring``). The
    aligned model's scan probabilities are calibrated as inference calibrates them (the
    bundle's calibration); the uncalibrated ones stay beside them as ``raw_prob_<class>``."""
    scoring, prompts = params["scan_scoring"], params["prompts"]
    columns = probability_columns(zero_shot_spec)
    patch_tables, scan_rows = [], []
    for (stage, variant), group in patch_embeddings.groupby(["stage", "variant"], sort=False):
        rows, vectors = _stage_prompts(prompt_embeddings, stage)
        scorer = ScanScorer.from_settings(
            zero_shot_spec, rows, vectors, _logit_scale(rows), scoring, prompts
        )
        for scan_id, patches in group.groupby("scan_id", sort=False):
            embeddings = embedding_matrix(patches, "image")
            probabilities, evidence = scorer.patch_probabilities(embeddings)
            table = patches[["scan_id", "stage", "variant", "patch", "x", "y", "z", "patch_size",
                             "key", "cut"]].assign(lesion_evidence=evidence)  # fmt: skip
            for name, target in zero_shot_spec["targets"].items():
                for index, value in enumerate(target["classes"]):
                    table[columns[(name, value)]] = probabilities[name][:, index]
            patch_tables.append(table)
            scores, any_lesion = scorer.scan_scores(probabilities, evidence)
            scan_rows.append(
                {"scan_id": scan_id, "stage": stage, "variant": variant,
                 "prob_any_lesion": any_lesion, **score_columns(zero_shot_spec, scores)}
            )  # fmt: skip
    scans = pd.DataFrame(scan_rows)
    names = list(columns.values())
    raw = scans[names].rename(columns=lambda name: f"raw_{name}")
    aligned = scans["stage"] == "aligned"
    calibration = clip_model.get("inference", {}).get("calibration")
    scans.loc[aligned, names] = apply_calibration(scans.loc[aligned, names], calibration)
    return pd.concat(patch_tables, ignore_index=True), pd.concat([scans, raw], axis=1)


def _scan_scores(
    test_scan_scores: pd.DataFrame,
    spec: dict,
    target: str,
    stage: str,
    variant: str,
    prefix: str = "",
) -> tuple[pd.DataFrame, np.ndarray]:
    """A stage and variant's scans and their (calibrated; ``prefix="raw_"``: uncalibrated)
    probabilities of ``target``'s classes."""
    columns = probability_columns(spec)
    rows = select_embeddings(test_scan_scores, stage, variant)
    names = [prefix + columns[(target, value)] for value in spec["targets"][target]["classes"]]
    return rows, rows[names].to_numpy(dtype=np.float64)


# --- metrics -----------------------------------------------------------------------------------


def _with_intervals(metric_fn: Callable, groups, params: dict, seed: int) -> dict:
    bootstrap = params["bootstrap"]
    return with_bootstrap_intervals(
        metric_fn, groups, bootstrap["n_resamples"], bootstrap["confidence"], seed
    )


def _zero_shot_with_intervals(scores, labels, classes, groups, params, seed) -> dict:
    return _with_intervals(
        lambda i: zero_shot_metrics(scores[i], labels[i], classes), groups, params, seed
    )


def _scan_level_with_intervals(scores, labels, classes, groups, params, seed) -> dict:
    """Zero-shot metrics of scan-level probabilities, with their expected calibration error
    (``overall.ece``: users read ``prob_<class>`` as probabilities)."""

    def metrics(indices: np.ndarray) -> dict:
        result = zero_shot_metrics(scores[indices], labels[indices], classes)
        result["overall"]["ece"] = expected_calibration_error(
            scores[indices], labels[indices], params["calibration"]["n_bins"]
        )
        return result

    return _with_intervals(metrics, groups, params, seed)


def lesion_detection_metrics(
    patch_scores: pd.DataFrame, groups: list[str], params: dict, seed: int
) -> dict:
    """AUC of lesion vs no-lesion patches, score 1 − p(no lesion). Patches that cut a lesion
    without showing enough of it are neither, and left out (``n_excluded``)."""
    positive = patch_scores["key"].fillna("") != ""
    negative = ~positive & ~patch_scores["cut"].astype(bool)
    keep = (positive | negative).to_numpy()
    labels = positive.to_numpy()[keep]
    scores = patch_scores["lesion_evidence"].to_numpy()[keep]
    counts = {
        "n_positive": int(labels.sum()),
        "n_negative": int((~labels).sum()),
        "n_excluded": int((~keep).sum()),
    }
    reason = single_class_reason(labels.astype(int))
    if reason:
        return {"skipped": f"lesion detection: {reason} among the test patches", **counts}

    def detection(indices: np.ndarray) -> dict:
        return {"auc": roc_auc(labels[indices], scores[indices])}

    return {**_with_intervals(detection, np.asarray(groups)[keep], params, seed), **counts}


def zero_shot_evaluation(
    test_embeddings: pd.DataFrame,
    train_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    test_scan_scores: pd.DataFrame,
    test_patch_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Scan level (patch evidence aggregated), lesion level (the paper's cubes), patch-level
    lesion detection and the scan-level targets: each for the model, its lesion-ablated
    control and the model before alignment, beside the exact random baseline, with
    patient-level bootstrap intervals."""
    patient_of = patient_ids(scan_sentences)
    ensemble = params["prompts"]["ensemble"]
    result = {
        "prompts": {
            "ensemble": ensemble,
            "negative": params["prompts"]["negative"],
            "aggregation": params["scan_scoring"]["aggregation"],
            "top_k": params["scan_scoring"]["top_k"],
            "stride": params["scan_scoring"]["stride"],
        },
        "environment": compute_environment(),
    }
    for target in zero_shot_spec["targets"]:
        classes = zero_shot_spec["targets"][target]["classes"]
        part = {}
        for comparison, (stage, variant) in COMPARISONS.items():
            rows, scores = _scan_scores(test_scan_scores, zero_shot_spec, target, stage, variant)
            if rows.empty:
                continue
            labels = target_labels(scan_sentences, rows["scan_id"], zero_shot_spec, target)
            groups = rows["scan_id"].map(patient_of).tolist()
            part[comparison] = _scan_level_with_intervals(
                scores, labels, classes, groups, params, seed
            )
            if comparison == "model":
                part["random"] = zero_shot_random_baseline(labels, classes)
                _, raw = _scan_scores(
                    test_scan_scores, zero_shot_spec, target, stage, variant, prefix="raw_"
                )
                part[comparison]["overall"]["ece_uncalibrated"] = expected_calibration_error(
                    raw, labels, params["calibration"]["n_bins"]
                )
        if target == REGIONS_TARGET:
            result["scan_level"] = part
        else:
            result.setdefault("targets", {})[target] = part

    lesion_part = {}
    for comparison, (stage, variant) in COMPARISONS.items():
        # Softmax over regions, as the reference and the scan-level patch scores do: a cube's
        # cosines to every region prompt move together, and per-region AUCs over raw cosines
        # rank cubes by that shared offset as much as by region.
        lesions, scores, labels = _lesion_cubes(
            test_embeddings, prompt_embeddings, regions, stage, variant, ensemble, softmax=True
        )
        if lesions.empty:
            continue
        groups = lesions["scan_id"].map(patient_of).tolist()
        lesion_part[comparison] = _zero_shot_with_intervals(
            scores, labels, regions, groups, params, seed
        )
        if comparison == "model":
            lesion_part["random"] = zero_shot_random_baseline(labels, regions)
            train = select_embeddings(train_embeddings, level="lesion")
            lesion_part["gap_sweep"] = zero_shot_gap_sweep(
                embedding_matrix(train, "image"),
                embedding_matrix(train, "text"),
                embedding_matrix(lesions, "image"),
                _region_prompts(prompt_embeddings, stage, ensemble),
                labels,
                regions,
                lambdas=params["gap_lambdas"],
            )
    if lesion_part:
        result["lesion_level"] = lesion_part

    detection = {}
    for comparison, (stage, variant) in COMPARISONS.items():
        patches = select_embeddings(test_patch_scores, stage, variant)
        if patches.empty:
            continue
        groups = patches["scan_id"].map(patient_of).tolist()
        detection[comparison] = lesion_detection_metrics(patches, groups, params, seed)
    detection["random"] = {"auc": 0.5}
    result["lesion_detection"] = detection
    return result


def retrieval_evaluation(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    test_scan_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Per level: retrieval by each region prompt for the model and its lesion-ablated
    control (with bootstrap intervals), beside the analytic random baseline and shuffled
    scores. Scan level ranks scans by their aggregated evidence for the region; lesion level
    ranks lesion cubes by their distance to the region prompt."""
    patient_of = patient_ids(scan_sentences)
    ensemble = params["prompts"]["ensemble"]
    result = {}
    for level in LEVELS:
        part = {}
        for comparison in ("model", "lesion_ablated"):
            stage, variant = COMPARISONS[comparison]
            if level == "scan":
                rows, scores = _scan_scores(
                    test_scan_scores, zero_shot_spec, REGIONS_TARGET, stage, variant
                )
                if rows.empty:
                    continue
                labels = target_labels(scan_sentences, rows["scan_id"], zero_shot_spec,
                                        REGIONS_TARGET)  # fmt: skip
            else:
                rows, scores, labels = _lesion_cubes(
                    test_embeddings, prompt_embeddings, regions, stage, variant, ensemble
                )
                if rows.empty:
                    continue
            groups = rows["scan_id"].map(patient_of).tolist()
            part[comparison] = _with_intervals(
                lambda i, s=scores, y=labels: ranking_metrics(s[i], y[i], regions),
                groups,
                params,
                seed,
            )
            if comparison == "model":
                part["random"] = retrieval_random_baseline(labels, regions)
                part["shuffled"] = permutation_baseline(
                    ranking_metrics,
                    scores,
                    labels,
                    regions,
                    n_permutations=params["n_permutations"],
                    seed=seed,
                )
        if part:
            result[f"{level}_level"] = part
    return result


def baseline_evaluation(
    train_embeddings: pd.DataFrame,
    test_embeddings: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Supervised references on frozen embeddings (seed 004), at the primary level."""
    level = params["primary_level"]
    if not (test_embeddings["level"] == level).any():
        level = "scan"
    train, test = (
        select_embeddings(train_embeddings, level=level),
        select_embeddings(test_embeddings, level=level),
    )
    train_y, test_y = label_matrix(train["key"], regions), label_matrix(test["key"], regions)
    fusion = {**params["fusion"], "seed": seed}
    return {
        "level": level,
        "linear_probe": linear_probe(
            embedding_matrix(train, "image"),
            train_y,
            embedding_matrix(test, "image"),
            test_y,
            regions,
            C=params["probe_C"],
            seed=seed,
        ),
        **{
            kind: fusion_classifier(
                kind,
                embedding_matrix(train, "image"),
                embedding_matrix(train, "text"),
                train_y,
                embedding_matrix(test, "image"),
                embedding_matrix(test, "text"),
                test_y,
                regions,
                **fusion,
            )
            for kind in ("early_fusion", "late_fusion")
        },
    }


# --- figures -----------------------------------------------------------------------------------


def _axial(volume: np.ndarray, depth: int) -> np.ndarray:
    return np.rot90(volume[:, :, depth])


def _evidence_panels(
    patch_scores: pd.DataFrame,
    volumes: dict,
    ablated: dict,
    labels: dict,
    scan_ids: list[str],
) -> list[dict]:
    """The axial slice through each scan's largest lesion (or its middle), with the lesion
    evidence maps of the scan and of its ablated twin on the preprocessed grid."""
    panels = []
    for scan_id in scan_ids:
        volume = reference_channel(np.asarray(volumes[scan_id]))
        label = np.asarray(labels[scan_id]) if scan_id in labels else np.zeros(volume.shape)
        lesion_voxels = (label > 0).sum(axis=(0, 1))
        depth = int(np.argmax(lesion_voxels)) if lesion_voxels.any() else volume.shape[2] // 2
        panel = {
            "scan_id": scan_id,
            "image": _axial(volume, depth),
            "label": _axial(label, depth),
        }
        for variant in (ORIGINAL, ABLATED):
            rows = patch_scores[
                (patch_scores["scan_id"] == scan_id) & (patch_scores["variant"] == variant)
            ]
            if rows.empty:
                continue
            starts = rows[["x", "y", "z"]].to_numpy(dtype=int)
            size = int(rows["patch_size"].iloc[0])
            values = rows["lesion_evidence"].to_numpy()
            head = is_foreground(np.asarray(volumes[scan_id]))
            mapped = _axial(evidence_map(volume.shape, starts, size, values, head), depth)
            if variant == ORIGINAL:
                panel["evidence"] = mapped
            else:
                panel["ablated_image"] = _axial(
                    reference_channel(np.asarray(ablated[scan_id])), depth
                )
                panel["ablated_evidence"] = mapped
        panels.append(panel)
    return panels


def evaluation_figures(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    test_scan_scores: pd.DataFrame,
    test_patch_scores: pd.DataFrame,
    zero_shot_spec: dict,
    scan_sentences: pd.DataFrame,
    alignment_history: pd.DataFrame,
    preprocessed_volumes: dict,
    preprocessed_labels: dict,
    lesion_ablated_volumes: dict,
    regions: list[str],
    params: dict,
    seed: int,
) -> tuple[Figure, Figure, Figure, Figure, Figure]:
    """t-SNE before/after, scan-level ROC curves, training curves, retrieval example grid and
    lesion evidence maps of a few test scans beside their true label maps."""
    level = params["primary_level"]
    if not (test_embeddings["level"] == level).any():
        level = "scan"
    after = select_embeddings(test_embeddings, level=level)
    before = select_embeddings(test_embeddings, "initial", level=level)
    first_region = [key.split(";")[0] or "none" for key in after["key"]]
    tsne = tsne_before_after(
        embedding_matrix(before, "image"),
        embedding_matrix(before, "text"),
        embedding_matrix(after, "image"),
        embedding_matrix(after, "text"),
        first_region,
        regions=[*regions, "none"],
        seed=seed,
    )
    rows, scores = _scan_scores(test_scan_scores, zero_shot_spec, REGIONS_TARGET, "aligned",
                                ORIGINAL)  # fmt: skip
    labels = target_labels(scan_sentences, rows["scan_id"], zero_shot_spec, REGIONS_TARGET)
    roc = roc_curves(scores, labels, regions)
    curves = training_curves(alignment_history)
    volumes = VolumeSource(preprocessed_volumes)

    def middle_slice(index: int) -> np.ndarray:
        volume = reference_channel(np.asarray(volumes[rows["scan_id"][index]]))
        return np.rot90(volume[:, :, volume.shape[2] // 2])

    grid = retrieval_grid(
        scores,
        regions,
        middle_slice,
        top_k=min(params["grid_top_k"], len(rows)),
        labels=labels,
        sample_ids=rows["scan_id"].tolist(),
    )
    with_lesions = [sid for sid, y in zip(rows["scan_id"], labels, strict=True) if y.any()]
    shown = (with_lesions or list(rows["scan_id"]))[: params["n_figure_scans"]]
    evidence = evidence_figure(
        _evidence_panels(
            test_patch_scores[test_patch_scores["stage"] == "aligned"],
            volumes,
            VolumeSource(lesion_ablated_volumes),
            VolumeSource(preprocessed_labels),
            shown,
        )
    )
    return tsne, roc, curves, grid, evidence
