"""Thin nodes of the pretraining pipeline (AMAES-style masked autoencoder or BrainMVP)."""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd
from matplotlib.figure import Figure

from mriclip.evaluation.reconstructions import reconstruction_figure
from mriclip.imaging.collection import Store, preprocess_catalog
from mriclip.imaging.file_index import parameters_contract
from mriclip.imaging.preprocessing import PreprocessingConfig
from mriclip.imaging.validation import build_unlabelled_catalog
from mriclip.splits import in_split
from mriclip.training.pretraining_run import pretrain_encoder_bundle


def preprocess_unlabelled(
    unlabelled_images: dict[str, Callable],
    unlabelled_preprocessing_cache: Store,
    data_engineering: dict,
) -> tuple[dict, pd.DataFrame]:
    """Validate and preprocess extra unlabelled scans exactly like the labelled ones (in
    parallel, reusing unchanged scans from the cache), by the same data contract (with
    ``data_engineering.sequences``, a scan is its sequences' files, stacked as channels); the
    volumes are loaders, saved lazily."""
    contract = parameters_contract(
        data_engineering["sequences"], data_engineering["missing_sequences"]
    )
    catalog, problems = build_unlabelled_catalog(
        unlabelled_images,
        data_engineering["on_invalid"],
        contract,
        data_engineering["max_abs_intensity"],
    )
    done, failures = preprocess_catalog(
        catalog,
        unlabelled_images,
        {},
        PreprocessingConfig(**data_engineering["preprocessing"]),
        unlabelled_preprocessing_cache,
        data_engineering["workers"],
        data_engineering["dask_scheduler"],
        data_engineering["scan_timeout_s"],
    )
    failures.raise_if_any(data_engineering["on_invalid"])
    volumes = {f"unlabelled_{k}": v for k, v in done.loaders("volume").items()}
    return volumes, pd.concat([problems, failures.table()], ignore_index=True)


def pretrain_encoder(
    preprocessed_volumes: dict,
    unlabelled_volumes: dict,
    splits: pd.DataFrame,
    params: dict,
    seed: int,
) -> tuple[dict, pd.DataFrame, dict]:
    """Pretrain on the training split's volumes plus any unlabelled ones; measure
    reconstruction on the held-out test split's volumes (never trained on)."""
    volumes = {**preprocessed_volumes, **unlabelled_volumes}
    train_ids = sorted(in_split(splits, "train")["scan_id"]) + sorted(unlabelled_volumes)
    held_out = sorted(in_split(splits, "test")["scan_id"])
    return pretrain_encoder_bundle(volumes, train_ids, held_out, params, seed)


def plot_reconstructions(
    pretrained_encoder: dict,
    preprocessed_volumes: dict,
    splits: pd.DataFrame,
    params: dict,
    seed: int,
) -> Figure:
    """Input / masked input / reconstruction, middle axial slices of a few held-out volumes."""
    held_out = sorted(in_split(splits, "test")["scan_id"])[: params["n_figure_volumes"]]
    return reconstruction_figure(pretrained_encoder, preprocessed_volumes, held_out, params, seed)
