"""Figures: the expected axes and lines, and they render headless."""

import io

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from mriclip.evaluation.plots import (
    evidence_figure,
    retrieval_grid,
    roc_curves,
    training_curves,
    tsne_before_after,
)

REGIONS = ["frontal", "parietal", "temporal"]


def embeddings(n=15, dim=6, seed=0):
    rng = np.random.default_rng(seed)
    prompts = rng.normal(size=(len(REGIONS), dim))
    region_index = np.arange(n) % len(REGIONS)
    images = prompts[region_index] + 0.3 * rng.normal(size=(n, dim))
    return images, prompts, region_index


def renders(figure):
    figure.savefig(io.BytesIO(), format="png")
    return True


def test_tsne_before_after_has_two_panels():
    images, prompts, region_index = embeddings()
    rng = np.random.default_rng(1)
    texts = prompts[region_index] + 0.05 * rng.normal(size=images.shape)
    names = [REGIONS[i] for i in region_index]
    figure = tsne_before_after(
        rng.normal(size=images.shape),
        rng.normal(size=images.shape),
        images,
        texts,
        names,
        seed=0,
        max_iter=250,
    )
    assert isinstance(figure, Figure)
    assert [ax.get_title() for ax in figure.axes] == ["before alignment", "after alignment"]
    assert renders(figure)
    with pytest.raises(ValueError, match="sample_regions"):
        tsne_before_after(images, texts, images, texts, names[:-1])
    with pytest.raises(ValueError, match=r"\['temporal'\] are labelled but not in regions"):
        tsne_before_after(images, texts, images, texts, names, regions=REGIONS[:2])


def test_roc_curves_draw_one_line_per_scored_region_plus_chance():
    images, prompts, region_index = embeddings()
    labels = np.eye(len(REGIONS), dtype=int)[region_index]
    labels[:, 2] = 0  # temporal has no positive: no curve
    figure = roc_curves(images @ prompts.T, labels, REGIONS)
    (ax,) = figure.axes
    assert len(ax.get_lines()) == 2 + 1
    assert "temporal" in ax.get_title()
    assert renders(figure)


@pytest.mark.parametrize(
    ("extra_columns", "n_axes"),
    [([], 1), (["temperature"], 2), (["temperature", "lr_text", "lr_vision"], 3)],
)
def test_training_curves_add_panels_for_optional_columns(extra_columns, n_axes):
    steps = np.arange(20)
    history = pd.DataFrame({"step": steps, "loss": 1 / (1 + steps)})
    history["val_loss"] = np.where(steps % 5 == 0, 1.2 / (1 + steps), np.nan)
    for column in extra_columns:
        history[column] = np.linspace(0.1, 1, 20)
    figure = training_curves(history)
    assert len(figure.axes) == n_axes
    assert len(figure.axes[0].get_lines()) == 2  # loss and val_loss
    assert len(figure.axes[0].get_lines()[1].get_xdata()) == 4  # NaN rows dropped
    assert renders(figure)
    with pytest.raises(ValueError, match="lacks columns"):
        training_curves(history.drop(columns="loss"))


def test_retrieval_grid_has_prompt_rows_and_top_k_columns():
    images, prompts, region_index = embeddings()
    labels = np.eye(len(REGIONS), dtype=int)[region_index]
    slices = [np.full((8, 8), i, float) for i in range(len(images))]
    scores = images @ prompts.T
    figure = retrieval_grid(scores, REGIONS, slices, top_k=4, labels=labels)
    assert len(figure.axes) == len(REGIONS) * 4
    assert figure.axes[0].get_ylabel() == "frontal"
    best = int(np.argmax(scores[:, 0]))
    assert figure.axes[0].get_title().startswith(f"{best}  s={scores[best, 0]:.2f}")
    assert renders(figure)
    few = scores[:5]
    from_callable = retrieval_grid(few, REGIONS, lambda i: slices[i], top_k=40)
    assert len(from_callable.axes) == len(REGIONS) * len(few)  # top_k capped at n


def test_evidence_figure_shows_scan_evidence_and_its_ablated_twin():
    image, label = np.random.default_rng(0).random((12, 12)), np.zeros((12, 12))
    label[4:7, 4:7] = 1
    panel = {"scan_id": "S1", "image": image, "label": label, "evidence": image / 2}
    twin = {**panel, "ablated_image": image, "ablated_evidence": image / 4}
    figure = evidence_figure([twin, panel])
    titles = [ax.get_title() for ax in figure.axes]
    assert {"S1: label map", "S1: lesion evidence", "S1: ablated twin"} <= set(titles)
    assert renders(figure)
    with pytest.raises(ValueError, match="no scans"):
        evidence_figure([])
