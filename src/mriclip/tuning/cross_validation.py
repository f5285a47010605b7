"""Alignment on one cross-validation fold, from the alignment pipeline's inputs: what the
alignment node (one fold, saved) and the tuning node (each trial's folds) both run."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import pandas as pd

from mriclip.evaluation.embedding import embed_dataset, label_matrix
from mriclip.evaluation.retrieval import retrieval_metrics
from mriclip.evaluation.zero_shot import evaluate_zero_shot
from mriclip.imaging.augmentation import AugmentationConfig, full_augmentation
from mriclip.models.clip import ClipModel
from mriclip.models.factory import create_clip_model, embed_texts, initial_image_encoder
from mriclip.splits import in_split
from mriclip.text.templates import SentenceTemplates
from mriclip.training.alignment import AlignmentConfig, train_alignment
from mriclip.training.engine import configs_from_params
from mriclip.training.methods import AlignmentMethod
from mriclip.training.runtime import seed_everything
from mriclip.training.samples import (
    AlignmentSamples,
    cohort_patch_columns,
    cohort_templates,
    stack_channels,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FoldInputs:
    """The catalog entries and parameters a fold trains from (the alignment pipeline's
    ``FOLD_INPUTS`` names them)."""

    scan_sentences: pd.DataFrame
    splits: pd.DataFrame
    preprocessed_volumes: dict
    preprocessed_labels: dict
    lesion_table: pd.DataFrame
    region_prompts: dict
    pretrained_encoder: dict | None
    sentences: dict
    regions: list[str]


def training_and_validation_scans(
    scan_sentences: pd.DataFrame, splits: pd.DataFrame, fold: int | None
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Scans of the training split, minus fold ``fold`` which becomes validation. The test
    split is never returned."""
    train = in_split(splits, "train")
    if fold is not None and fold not in set(train["fold"]):
        raise ValueError(
            f"alignment.fold={fold} is not a fold of the splits table "
            f"(folds: {sorted(set(train['fold']))})"
        )
    held = set(train.loc[train["fold"] == fold, "scan_id"]) if fold is not None else set()
    fit = set(train["scan_id"]) - held
    rows = scan_sentences.set_index("scan_id", drop=False)
    return rows.loc[sorted(fit)].reset_index(drop=True), rows.loc[sorted(held)].reset_index(
        drop=True
    )


def with_lesion_maps(
    scans: pd.DataFrame, lesion_table: pd.DataFrame, labels: dict, what: str
) -> pd.DataFrame:
    """Patch mode describes the lesions inside each patch, which needs to know where they
    are: a scan with lesions is used only if its label map locates every one of them
    (lesion-free scans need none). The others are left out with a warning naming them."""
    located = lesion_table.groupby("scan_id").size()
    n_located = scans["scan_id"].map(located).fillna(0)
    keep = (scans["n_lesions"] == 0) | (
        scans["scan_id"].isin(set(labels)) & (n_located == scans["n_lesions"])
    )
    if not scans["n_lesions"].any():  # no lesion information: cubes anywhere in the head
        return scans
    if what == "training" and (keep & (scans["n_lesions"] > 0)).sum() < 2:
        raise ValueError(
            f"patch mode needs scans whose label map locates their lesions, but only "
            f"{int((keep & (scans['n_lesions'] > 0)).sum())} training scan(s) have that (see "
            "catalog_problems). Use alignment.mode: volume for data without label maps."
        )
    if not keep.all():
        logger.warning(
            "patch mode: %s scan(s) %s have lesions their label map does not locate; left out",
            what,
            scans.loc[~keep, "scan_id"].tolist(),
        )
    return scans[keep]


def alignment_samples(
    scans: pd.DataFrame,
    inputs: FoldInputs,
    params: dict,
    seed: int,
    training: bool,
    position_channels: bool,
    method: AlignmentMethod,
) -> AlignmentSamples:
    """Training items carry what the alignment method adds (FLIP's dropped blocks, SLIP's
    views); validation items are plain."""
    augment = None
    augmentation = AugmentationConfig(**params["augmentation"])
    if training and augmentation.active:
        augment = full_augmentation(augmentation, ["image"], seed)
    return AlignmentSamples(
        scans,
        inputs.preprocessed_volumes,
        inputs.lesion_table,
        cohort_templates(SentenceTemplates.from_params(inputs.sentences), inputs.scan_sentences),
        mode=params["mode"],
        patch_size=params["patch_size"],
        jitter=params["patch_jitter"],
        augment=augment,
        paraphrase=training and params["paraphrase"],
        seed=seed,
        labels=inputs.preprocessed_labels,
        lesion_patch_fraction=params["lesion_patch_fraction"],
        min_visible_fraction=params["min_visible_fraction"],
        patch_columns=cohort_patch_columns(params["patch_columns"], inputs.scan_sentences)[0],
        matched_fraction=params["matched_fraction"],
        position_channels=position_channels,
        **(method.training_items(seed) if training else {}),
    )


@dataclass(frozen=True)
class ValidationMetrics:
    """Zero-shot macro AUC and retrieval MRR on the validation items, for model selection
    and tuning objectives. (A class, not a closure: DDP workers get it pickled.)"""

    val_set: AlignmentSamples
    region_prompts: dict
    regions: list[str]

    def __call__(self, model: ClipModel) -> dict:
        embedded = embed_dataset(model, self.val_set)
        prompts = embed_texts(model, [self.region_prompts[r] for r in self.regions]).numpy()
        labels = label_matrix(embedded["keys"], self.regions)
        auc = evaluate_zero_shot(embedded["image"], prompts, labels, self.regions)["overall"]
        mrr = retrieval_metrics(embedded["image"], prompts, labels, self.regions)["overall"]
        return {
            "zero_shot_auc": auc.get("auc_macro", float("nan")),
            "retrieval_mrr": mrr.get("mrr", float("nan")),
        }


def train_on_fold(
    inputs: FoldInputs, params: dict, seed: int, on_validation=None
) -> tuple[ClipModel, pd.DataFrame]:
    """Train on the training split minus fold ``params["fold"]`` (validation), with the
    ``alignment`` parameters ``params``; returns the kept model and the history."""
    training, config = configs_from_params(
        params["training"], AlignmentConfig, seed, "alignment.training"
    )
    method = AlignmentMethod.from_params(params)
    if method.name == "lit" and params["image_init"] == "random":
        raise ValueError(
            "alignment.method lit locks the image tower, which alignment.image_init: random "
            "leaves untrained; use pretrained or a checkpoint path"
        )
    seed_everything(seed)  # heads and temperature start the same for the same seed
    train_scans, val_scans = training_and_validation_scans(
        inputs.scan_sentences, inputs.splits, params["fold"]
    )
    if params["mode"] == "patch":
        labels = inputs.preprocessed_labels
        train_scans = with_lesion_maps(train_scans, inputs.lesion_table, labels, "training")
        val_scans = with_lesion_maps(val_scans, inputs.lesion_table, labels, "validation")
    logger.info(
        "alignment: %d training scans, %d validation scans", len(train_scans), len(val_scans)
    )
    encoder = initial_image_encoder(
        params["image_init"],
        params["image_encoder"],
        inputs.pretrained_encoder,
        stack_channels(inputs.preprocessed_volumes, list(train_scans["scan_id"])),
    )
    position = encoder.position_channels
    train_set = alignment_samples(train_scans, inputs, params, seed, True, position, method)
    val_set = validate = None
    if len(val_scans) > 1:
        val_set = alignment_samples(val_scans, inputs, params, seed + 1, False, position, method)
        validate = ValidationMetrics(val_set, inputs.region_prompts, inputs.regions)
    model = create_clip_model(encoder, params["text_encoder"], params["clip"])
    return train_alignment(
        model, train_set, val_set, training, config, method, validate, on_validation
    )
