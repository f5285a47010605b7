"""The embeddings the evaluation scores, made once: the test scans (whole volumes and lesion
cubes) for each model stage and variant, the training items, the test scans' grid patches and
every zero-shot prompt of both stages.

Stages: ``aligned`` (the trained model) and ``initial`` (the same model before alignment).
Variants: ``original`` and ``lesion_ablated`` (the same test scans without their lesions).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from mriclip.evaluation.embedding import (
    embed_dataset,
    embed_patches,
    patch_lesion_truth,
    scan_patches,
)
from mriclip.evaluation.embedding_tables import ABLATED, ORIGINAL
from mriclip.evaluation.prompts import prompt_texts, zero_shot_spec
from mriclip.models.factory import (
    create_clip_model,
    embed_texts,
    initial_image_encoder,
    load_clip_model,
)
from mriclip.splits import in_split
from mriclip.text.templates import SentenceTemplates
from mriclip.training.runtime import pick_device, seed_everything
from mriclip.training.samples import (
    AlignmentSamples,
    LesionPatches,
    VolumeSource,
    cohort_templates,
    spatial_shape,
    stack_channels,
)


def embedding_rows(embedded: dict, level: str, split: str, stage: str, variant: str):
    """An ``embed_dataset`` result as table rows: the item's description beside its
    ``image_<i>`` and ``text_<i>`` columns."""
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


def embed_levels(
    model, scans, volumes, lesion_table, templates, patch_size, split, stage, variant
) -> list[pd.DataFrame]:
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
    # One volume a forward: on a CPU a batch of 96^3 volumes outgrows the cache and costs
    # half as much again per volume.
    volumes_embedded = embed_dataset(model, volume_items, batch_size=1)
    tables = [embedding_rows(volumes_embedded, "scan", split, stage, variant)]
    lesions = lesion_table[lesion_table["scan_id"].isin(set(scans["scan_id"]))]
    if len(lesions):
        patches = LesionPatches(lesions, scans, volumes, templates, patch_size, position)
        tables.append(
            embedding_rows(embed_dataset(model, patches), "lesion", split, stage, variant)
        )
    return tables


def patch_rows(
    model, scans, volumes, labels, lesion_table, alignment, scoring, stage, variant
) -> list[pd.DataFrame]:
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
            model,
            np.asarray(volumes[variant][scan_id]),
            starts,
            size,
            scoring["batch_size"],
            scoring["mixed_precision_cpu"],
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


def prompt_rows(texts: pd.DataFrame, models: dict) -> pd.DataFrame:
    """Every prompt embedded by each ``{stage: model}``, with the stage's logit scale."""
    rows = []
    for stage, model in models.items():
        vectors = pd.DataFrame(embed_texts(model, list(texts["text"])).numpy()).add_prefix("text_")
        logit_scale = float(model.logit_scale.detach())
        rows.append(
            pd.concat([texts.assign(stage=stage, logit_scale=logit_scale), vectors], axis=1)
        )
    return pd.concat(rows, ignore_index=True)


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
    and of every zero-shot prompt of both stages; plus the zero-shot spec they answer.

    The model before alignment is built from the same seed, encoder settings and pretrained
    encoder as the alignment node's initial model, so it is that model."""
    templates = cohort_templates(SentenceTemplates.from_params(sentences), scan_sentences)
    by_split = {
        split: scan_sentences[
            scan_sentences["scan_id"].isin(set(in_split(splits, split)["scan_id"]))
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
        test += embed_levels(model, by_split["test"], volumes[variant], *level_args, "test",
                             stage, variant)  # fmt: skip
        patches += patch_rows(
            model, by_split["test"], volumes, labels, lesion_table, alignment,
            evaluation["scan_scoring"], stage, variant,
        )  # fmt: skip
    train = embed_levels(
        aligned, by_split["train"], volumes[ORIGINAL], *level_args, "train", "aligned", ORIGINAL
    )
    spec = zero_shot_spec(
        regions, sentences, evaluation, by_split["train"], alignment["patch_columns"]
    )
    return (
        pd.concat(test, ignore_index=True),
        pd.concat(train, ignore_index=True),
        pd.concat(patches, ignore_index=True),
        prompt_rows(prompt_texts(spec), {"aligned": aligned, "initial": initial}),
        spec,
    )
