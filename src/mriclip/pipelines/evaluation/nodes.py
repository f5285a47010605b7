"""Thin nodes of the evaluation pipeline: embeddings once, then metrics, baselines, figures.

Levels: ``scan`` (whole preprocessed volume, labels = all regions of the scan) and ``lesion``
(a cube centred on each lesion, label = its region, as the paper). Stages: ``aligned`` (the
trained model) and ``initial`` (the same model before alignment: pretrained or random image
encoder, untrained heads), for the before/after t-SNE.
"""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from mriclip.evaluation.baselines import fusion_classifier, linear_probe
from mriclip.evaluation.embedding import embed_dataset, label_matrix
from mriclip.evaluation.modality_gap import zero_shot_gap_sweep
from mriclip.evaluation.plots import retrieval_grid, roc_curves, training_curves, tsne_before_after
from mriclip.evaluation.retrieval import (
    permutation_baseline,
    retrieval_metrics,
    retrieval_random_baseline,
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
from mriclip.training.runtime import pick_device, seed_everything
from mriclip.training.samples import AlignmentSamples, LesionPatches

logger = logging.getLogger(__name__)
LEVELS = ("scan", "lesion")


def _embedding_rows(embedded: dict, level: str, split: str, stage: str) -> pd.DataFrame:
    table = pd.DataFrame(
        {
            "level": level,
            "split": split,
            "stage": stage,
            "scan_id": embedded["scan_ids"],
            "key": embedded["keys"],
            "sentence": embedded["sentences"],
        }
    )
    image = pd.DataFrame(embedded["image"]).add_prefix("image_")
    text = pd.DataFrame(embedded["text"]).add_prefix("text_")
    return pd.concat([table, image, text], axis=1)


def _embed_all(
    model, scans_by_split, volumes, lesion_table, templates, patch_size, stage, splits_wanted
) -> list[pd.DataFrame]:
    tables = []
    for split in splits_wanted:
        scans = scans_by_split[split]
        volume_items = AlignmentSamples(
            scans, volumes, lesion_table, templates, mode="volume", paraphrase=False
        )
        tables.append(_embedding_rows(embed_dataset(model, volume_items), "scan", split, stage))
        lesions = lesion_table[lesion_table["scan_id"].isin(set(scans["scan_id"]))]
        if len(lesions):
            patches = LesionPatches(lesions, scans, volumes, templates, patch_size)
            tables.append(_embedding_rows(embed_dataset(model, patches), "lesion", split, stage))
    return tables


def embed_for_evaluation(
    clip_model: dict,
    pretrained_encoder: dict | None,
    scan_sentences: pd.DataFrame,
    splits: pd.DataFrame,
    preprocessed_volumes: dict,
    lesion_table: pd.DataFrame,
    region_prompts: dict,
    sentences: dict,
    regions: list[str],
    alignment: dict,
    seed: int,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Embeddings of train and test items (aligned model) and of test items before alignment,
    plus the prompt embeddings of both stages."""
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
            alignment["image_init"], alignment["image_encoder"], pretrained_encoder
        ),
        alignment["text_encoder"],
        alignment["clip"],
    ).to(device)
    args = (preprocessed_volumes, lesion_table, templates, alignment["patch_size"])
    train = _embed_all(aligned, by_split, *args, "aligned", ["train"])
    test = _embed_all(aligned, by_split, *args, "aligned", ["test"])
    test += _embed_all(initial, by_split, *args, "initial", ["test"])
    prompts = [region_prompts[region] for region in regions]
    prompt_rows = []
    for stage, model in (("aligned", aligned), ("initial", initial)):
        vectors = pd.DataFrame(embed_texts(model, prompts).numpy()).add_prefix("text_")
        prompt_rows.append(
            pd.concat(
                [pd.DataFrame({"stage": stage, "region": regions, "prompt": prompts}), vectors],
                axis=1,
            )
        )
    logit_scale = float(aligned.logit_scale.detach())
    prompt_table = pd.concat(prompt_rows, ignore_index=True).assign(logit_scale=logit_scale)
    return (pd.concat(test, ignore_index=True), pd.concat(train, ignore_index=True), prompt_table)


def _matrix(table: pd.DataFrame, prefix: str) -> np.ndarray:
    return table.filter(regex=f"^{prefix}_\\d+$").to_numpy(dtype=np.float64)


def _select(table: pd.DataFrame, level: str, stage: str = "aligned") -> pd.DataFrame:
    return table[(table["level"] == level) & (table["stage"] == stage)].reset_index(drop=True)


def _prompts(prompt_embeddings: pd.DataFrame, stage: str = "aligned") -> np.ndarray:
    return _matrix(prompt_embeddings[prompt_embeddings["stage"] == stage], "text")


def _levels(test_embeddings: pd.DataFrame) -> list[str]:
    return [level for level in LEVELS if (test_embeddings["level"] == level).any()]


def zero_shot_evaluation(
    test_embeddings: pd.DataFrame,
    train_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    regions: list[str],
    params: dict,
) -> dict:
    """Per level: the model, the same model before alignment, the exact random baseline, and
    the modality-gap sweep (gap measured on the training split)."""
    result = {}
    for level in _levels(test_embeddings):
        test = _select(test_embeddings, level)
        labels = label_matrix(test["key"], regions)
        before = _select(test_embeddings, level, "initial")
        train = _select(train_embeddings, level)
        result[f"{level}_level"] = {
            "model": zero_shot_metrics(
                zero_shot_scores(_matrix(test, "image"), _prompts(prompt_embeddings)),
                labels,
                regions,
            ),
            "before_alignment": zero_shot_metrics(
                zero_shot_scores(_matrix(before, "image"), _prompts(prompt_embeddings, "initial")),
                label_matrix(before["key"], regions),
                regions,
            ),
            "random": zero_shot_random_baseline(labels, regions),
            "gap_sweep": zero_shot_gap_sweep(
                _matrix(train, "image"),
                _matrix(train, "text"),
                _matrix(test, "image"),
                _prompts(prompt_embeddings),
                labels,
                regions,
                lambdas=params["gap_lambdas"],
            ),
        }
    return result


def retrieval_evaluation(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Per level: retrieval by each region prompt, beside the analytic random baseline and
    the same metrics on shuffled embeddings."""
    result = {}
    for level in _levels(test_embeddings):
        test = _select(test_embeddings, level)
        labels = label_matrix(test["key"], regions)
        images, prompts = _matrix(test, "image"), _prompts(prompt_embeddings)
        result[f"{level}_level"] = {
            "model": retrieval_metrics(images, prompts, labels, regions),
            "random": retrieval_random_baseline(labels, regions),
            "shuffled": permutation_baseline(
                retrieval_metrics,
                images,
                prompts,
                labels,
                regions,
                n_permutations=params["n_permutations"],
                seed=seed,
            ),
        }
    return result


def baseline_evaluation(
    train_embeddings: pd.DataFrame,
    test_embeddings: pd.DataFrame,
    regions: list[str],
    params: dict,
    seed: int,
) -> dict:
    """Supervised references on frozen embeddings (seed 004), at the primary level."""
    level = (
        params["primary_level"] if params["primary_level"] in _levels(test_embeddings) else "scan"
    )
    train, test = _select(train_embeddings, level), _select(test_embeddings, level)
    train_y, test_y = label_matrix(train["key"], regions), label_matrix(test["key"], regions)
    fusion = {**params["fusion"], "seed": seed}
    return {
        "level": level,
        "linear_probe": linear_probe(
            _matrix(train, "image"),
            train_y,
            _matrix(test, "image"),
            test_y,
            regions,
            C=params["probe_C"],
            seed=seed,
        ),
        **{
            kind: fusion_classifier(
                kind,
                _matrix(train, "image"),
                _matrix(train, "text"),
                train_y,
                _matrix(test, "image"),
                _matrix(test, "text"),
                test_y,
                regions,
                **fusion,
            )
            for kind in ("early_fusion", "late_fusion")
        },
    }


def evaluation_figures(
    test_embeddings: pd.DataFrame,
    prompt_embeddings: pd.DataFrame,
    alignment_history: pd.DataFrame,
    preprocessed_volumes: dict,
    regions: list[str],
    params: dict,
    seed: int,
) -> tuple[Figure, Figure, Figure, Figure]:
    """t-SNE before/after, ROC curves, training curves, retrieval example grid."""
    level = (
        params["primary_level"] if params["primary_level"] in _levels(test_embeddings) else "scan"
    )
    after, before = _select(test_embeddings, level), _select(test_embeddings, level, "initial")
    first_region = [key.split(";")[0] or "none" for key in after["key"]]
    tsne = tsne_before_after(
        _matrix(before, "image"),
        _matrix(before, "text"),
        _matrix(after, "image"),
        _matrix(after, "text"),
        first_region,
        regions=[*regions, "none"],
        seed=seed,
    )
    labels = label_matrix(after["key"], regions)
    scores = zero_shot_scores(_matrix(after, "image"), _prompts(prompt_embeddings))
    roc = roc_curves(scores, labels, regions)
    curves = training_curves(alignment_history)
    scans = _select(test_embeddings, "scan")

    def middle_slice(index: int) -> np.ndarray:
        volume = np.asarray(preprocessed_volumes[scans["scan_id"][index]]())
        return np.rot90(volume[:, :, volume.shape[2] // 2])

    grid = retrieval_grid(
        _matrix(scans, "image"),
        _prompts(prompt_embeddings),
        regions,
        middle_slice,
        top_k=min(params["grid_top_k"], len(scans)),
        labels=label_matrix(scans["key"], regions),
        sample_ids=scans["scan_id"].tolist(),
    )
    return tsne, roc, curves, grid
