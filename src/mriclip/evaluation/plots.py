"""Figures for reports: t-SNE before/after alignment, ROC curves, training curves, retrieval grid,
lesion evidence maps.

Every function returns a ``matplotlib.figure.Figure`` built without pyplot: no GUI backend is
touched, no global figure registry grows across a long Kedro run, and saving renders with Agg
(``kedro_datasets.matplotlib.MatplotlibDataset`` calls ``savefig``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.manifold import TSNE
from sklearn.metrics import roc_auc_score, roc_curve

from mriclip.evaluation.retrieval import (
    as_matrix,
    check_label_matrix,
    check_same_dim,
    single_class_reason,
)

logger = logging.getLogger(__name__)

MODALITY_MARKERS = {"image": "o", "text": "^"}
RELEVANT_COLOUR, IRRELEVANT_COLOUR = "tab:green", "tab:red"


def _region_colours(regions: Sequence[str]) -> dict[str, Any]:
    cmap = colormaps["tab10" if len(regions) <= 10 else "tab20"]
    return {region: cmap(index % cmap.N) for index, region in enumerate(regions)}


def _tsne_2d(points: np.ndarray, seed: int, perplexity: float | None, max_iter: int) -> np.ndarray:
    n_points = len(points)
    if n_points < 3:
        raise ValueError(f"tsne_before_after: need at least 3 points per panel, got {n_points}")
    if perplexity is None:
        # sklearn needs perplexity < n; a third of the points keeps small cohorts meaningful.
        perplexity = min(30.0, max(1.0, (n_points - 1) / 3))
        logger.info("t-SNE of %d points with perplexity %.1f", n_points, perplexity)
    elif perplexity >= n_points:
        raise ValueError(
            f"tsne_before_after: perplexity {perplexity} must be below the {n_points} points"
        )
    tsne = TSNE(
        n_components=2, perplexity=perplexity, init="pca", random_state=seed, max_iter=max_iter
    )
    return tsne.fit_transform(points)


def _tsne_panel(
    ax,
    image: np.ndarray,
    text: np.ndarray,
    image_regions: np.ndarray,
    text_regions: np.ndarray,
    colours: dict[str, Any],
    seed: int,
    perplexity: float | None,
    max_iter: int,
) -> None:
    points = _tsne_2d(np.vstack([image, text]), seed, perplexity, max_iter)
    parts = {
        "image": (points[: len(image)], image_regions),
        "text": (points[len(image) :], text_regions),
    }
    for modality, (xy, point_regions) in parts.items():
        for region, colour in colours.items():
            mask = point_regions == region
            if mask.any():
                ax.scatter(
                    xy[mask, 0],
                    xy[mask, 1],
                    color=colour,
                    s=18,
                    alpha=0.8,
                    marker=MODALITY_MARKERS[modality],
                )
    ax.set_xticks([])
    ax.set_yticks([])


def tsne_before_after(
    image_before: Any,
    text_before: Any,
    image_after: Any,
    text_after: Any,
    sample_regions: Sequence[str],
    text_regions: Sequence[str] | None = None,
    regions: Sequence[str] | None = None,
    seed: int = 0,
    perplexity: float | None = None,
    max_iter: int = 1000,
) -> Figure:
    """Two t-SNE panels (before | after alignment) of image and text embeddings together.

    Colour = region (``sample_regions`` per image row; ``text_regions`` per text row, default
    the same), marker = modality. Each panel embeds its image and text rows jointly, so a
    modality gap shows as two separate clouds. ``perplexity`` defaults to min(30, (n−1)/3).
    """
    where = "tsne_before_after"
    image_regions = np.asarray(sample_regions, dtype=str)
    text_regions = image_regions if text_regions is None else np.asarray(text_regions, dtype=str)
    if regions is None:
        regions = list(dict.fromkeys([*image_regions, *text_regions]))
    unknown = sorted(map(str, (set(image_regions) | set(text_regions)) - set(regions)))
    if unknown:
        raise ValueError(f"{where}: regions {unknown} are labelled but not in regions {regions}")
    panels = {}
    for stage, image, text in (
        ("before", image_before, text_before),
        ("after", image_after, text_after),
    ):
        image = as_matrix(image, f"image_{stage}", where)
        text = as_matrix(text, f"text_{stage}", where)
        check_same_dim(image, f"image_{stage}", text, f"text_{stage}", where)
        if len(image) != len(image_regions) or len(text) != len(text_regions):
            raise ValueError(
                f"{where}: image_{stage} has {len(image)} rows and text_{stage} {len(text)}, but "
                f"there are {len(image_regions)} sample_regions and {len(text_regions)} "
                "text_regions"
            )
        panels[stage] = (image, text)

    colours = _region_colours(regions)
    figure = Figure(figsize=(11, 5), layout="constrained")
    for ax, (stage, (image, text)) in zip(figure.subplots(1, 2), panels.items(), strict=True):
        _tsne_panel(
            ax, image, text, image_regions, text_regions, colours, seed, perplexity, max_iter
        )
        ax.set_title(f"{stage} alignment")
    handles = [
        Line2D([], [], linestyle="", marker="s", color=colour, label=region)
        for region, colour in colours.items()
    ]
    handles += [
        Line2D([], [], linestyle="", marker=marker, color="grey", label=modality)
        for modality, marker in MODALITY_MARKERS.items()
    ]
    figure.legend(handles=handles, loc="outside right center")
    return figure


def roc_curves(scores: Any, labels: Any, regions: Sequence[str]) -> Figure:
    """One-vs-rest ROC curve per region (AUC in the legend) and the chance diagonal.

    Regions whose labels hold one class have no curve; they are named in the title.
    """
    where = "roc_curves"
    scores = as_matrix(scores, "scores", where)
    if scores.shape[1] != len(regions):
        raise ValueError(f"{where}: scores has {scores.shape[1]} columns, regions {len(regions)}")
    labels = check_label_matrix(labels, len(scores), "scores", regions, where)
    figure = Figure(figsize=(5.5, 5), layout="constrained")
    ax = figure.subplots()
    colours = _region_colours(regions)
    skipped = []
    for index, region in enumerate(regions):
        if single_class_reason(labels[:, index]):
            skipped.append(region)
            continue
        fpr, tpr, _ = roc_curve(labels[:, index], scores[:, index])
        auc = roc_auc_score(labels[:, index], scores[:, index])
        ax.plot(fpr, tpr, color=colours[region], label=f"{region} (AUC {auc:.2f})")
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("zero-shot ROC" + (f" (no curve: {', '.join(skipped)})" if skipped else ""))
    ax.legend(loc="lower right", fontsize="small")
    return figure


def training_curves(history: pd.DataFrame) -> Figure:
    """Loss (and ``val_loss``) by step; ``temperature`` and ``lr_*`` columns in their own panels.

    ``history`` needs ``step`` and ``loss``; validation rows logged less often may hold NaN
    loss columns elsewhere, which are dropped per curve.
    """
    missing = {"step", "loss"} - set(history.columns)
    if missing:
        raise ValueError(f"training_curves: history lacks columns {sorted(missing)}")
    panels = {"loss": [column for column in ("loss", "val_loss") if column in history]}
    if "temperature" in history:
        panels["temperature"] = ["temperature"]
    learning_rates = [column for column in history.columns if str(column).startswith("lr_")]
    if learning_rates:
        panels["learning rate"] = learning_rates
    figure = Figure(figsize=(4.5 * len(panels), 3.8), layout="constrained")
    axes = figure.subplots(1, len(panels), squeeze=False)[0]
    for ax, (title, columns) in zip(axes, panels.items(), strict=True):
        for column in columns:
            curve = history[["step", column]].dropna()
            ax.plot(curve["step"], curve[column], label=column)
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.legend(fontsize="small")
    return figure


def retrieval_grid(
    scores: Any,
    regions: Sequence[str],
    slices: Callable[[int], Any] | Sequence[Any],
    top_k: int = 5,
    labels: Any = None,
    sample_ids: Sequence[str] | None = None,
) -> Figure:
    """Rows = region prompts, columns = their ``top_k`` best-scored samples (``scores``: (n,
    k), higher is nearer, e.g. a scan's aggregated evidence or minus a distance), shown as 2-D
    slices.

    ``slices`` is ``slices(sample_index) -> 2-D array`` (e.g. the middle axial slice) or a
    sequence of 2-D arrays, one per sample. With ``labels`` a relevant sample gets a green
    frame, an irrelevant one red.
    """
    where = "retrieval_grid"
    scores = as_matrix(scores, "scores", where)
    n_samples, n_prompts = scores.shape
    if n_prompts != len(regions):
        raise ValueError(f"{where}: scores has {n_prompts} columns, regions {len(regions)}")
    if not callable(slices) and len(slices) != n_samples:
        raise ValueError(f"{where}: slices has {len(slices)} items for {n_samples} samples")
    if labels is not None:
        labels = check_label_matrix(labels, n_samples, "scores", regions, where)
    ids = list(sample_ids) if sample_ids is not None else [str(i) for i in range(n_samples)]
    columns = min(top_k, n_samples)
    order = np.argsort(-scores.T, axis=1, kind="stable")[:, :columns]

    figure = Figure(figsize=(2.0 * columns, 2.2 * n_prompts), layout="constrained")
    axes = figure.subplots(n_prompts, columns, squeeze=False)
    for row, region in enumerate(regions):
        for column, sample in enumerate(order[row]):
            ax = axes[row, column]
            image = slices(int(sample)) if callable(slices) else slices[sample]
            ax.imshow(np.asarray(image), cmap="gray")
            ax.set_title(f"{ids[sample]}  s={scores[sample, row]:.2f}", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
            if labels is not None:
                colour = RELEVANT_COLOUR if labels[sample, row] else IRRELEVANT_COLOUR
                for spine in ax.spines.values():
                    spine.set(color=colour, linewidth=3)
        axes[row, 0].set_ylabel(region)
    return figure


def evidence_figure(panels: Sequence[Mapping[str, Any]]) -> Figure:
    """One row per scan: the slice with its true lesions outlined, then the model's lesion
    evidence over it, then the evidence on its lesion-ablated twin (if given).

    Each panel: ``scan_id``, ``image`` (2-D), ``label`` (2-D, lesions > 0), ``evidence``
    (2-D, in [0, 1]) and optionally ``ablated_image`` and ``ablated_evidence``.
    """
    if not panels:
        raise ValueError("evidence_figure: no scans to show")
    columns = 3 if any("ablated_evidence" in panel for panel in panels) else 2
    figure = Figure(figsize=(3.0 * columns, 3.0 * len(panels)), layout="constrained")
    axes = figure.subplots(len(panels), columns, squeeze=False)
    shown = None
    for row, panel in enumerate(panels):
        views = [
            ("label map", panel["image"], None),
            ("lesion evidence", panel["image"], panel["evidence"]),
        ]
        if columns == 3 and "ablated_evidence" in panel:
            views.append(("ablated twin", panel["ablated_image"], panel["ablated_evidence"]))
        for column, (title, image, evidence) in enumerate(views):
            ax = axes[row, column]
            ax.imshow(np.asarray(image), cmap="gray")
            if evidence is None:
                if np.any(panel["label"] > 0):
                    ax.contour(np.asarray(panel["label"]) > 0, levels=[0.5], colors="lime")
            else:
                shown = ax.imshow(
                    np.asarray(evidence), cmap="inferno", alpha=0.55, vmin=0.0, vmax=1.0
                )
                ax.contour(np.asarray(panel["label"]) > 0, levels=[0.5], colors="lime",
                           linewidths=0.8)  # fmt: skip
            ax.set_title(f"{panel['scan_id']}: {title}", fontsize="small")
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[row, len(views) :]:
            ax.axis("off")
    if shown is not None:
        figure.colorbar(shown, ax=axes[:, -1], shrink=0.6, label="1 − p(no lesion)")
    return figure
