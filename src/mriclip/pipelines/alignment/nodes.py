"""Thin nodes of the alignment pipeline: CLIP training of image + text encoders."""

from __future__ import annotations

import pandas as pd

from mriclip.evaluation.prompts import zero_shot_spec
from mriclip.evaluation.scan_calibration import fit_scan_calibration
from mriclip.models.factory import clip_model_bundle
from mriclip.splits import in_split
from mriclip.training.methods import AlignmentMethod
from mriclip.tuning.cross_validation import (
    FoldInputs,
    train_on_fold,
    training_and_validation_scans,
)


def train_clip_model(
    preprocessing_settings: dict,
    sequence_settings: dict,
    params: dict,
    evaluation: dict,
    seed: int,
    **inputs,
) -> tuple[dict, pd.DataFrame]:
    """The node: train on the configured fold and save the model as a bundle that carries
    what inference needs besides the weights: the preprocessing the volumes had, the
    sequences they stack (and the missing-sequence rule), the patch size and mode, the
    zero-shot targets with their prompts, and the scan-level calibration fitted on the
    validation fold. ``inputs`` are the fold's (``FoldInputs``; the
    pipeline's ``FOLD_INPUTS``)."""
    data = FoldInputs(**inputs)
    splits, sentences = data.splits, data.scan_sentences
    training_rows = sentences[sentences["scan_id"].isin(in_split(splits, "train")["scan_id"])]
    # before training: a cohort left with no target fails now, not after the training run
    spec = zero_shot_spec(
        data.regions, data.sentences, evaluation, training_rows, params["patch_columns"]
    )
    model, history = train_on_fold(data, params, seed)
    _, held_out = training_and_validation_scans(sentences, splits, params["fold"])
    inference = {
        "preprocessing": preprocessing_settings,
        "sequences": sequence_settings["sequences"],
        "missing_sequences": sequence_settings["missing_sequences"],
        "mode": params["mode"],
        "patch_size": params["patch_size"],
        "zero_shot": spec,
        "calibration": fit_scan_calibration(
            model, held_out, data.preprocessed_volumes, spec, params["patch_size"], evaluation
        ),
    }
    method = AlignmentMethod.from_params(params).settings()
    bundle = clip_model_bundle(model, params["text_encoder"], params["clip"], method, inference)
    return bundle, history
