"""Zero-shot targets and their prompts: what a class is called, in which words.

A *target* is one zero-shot question with a class vocabulary:

- ``regions`` (kind ``lesion``): which regions hold a lesion. Its evidence is local, so a scan
  is scored patch by patch; besides the region prompts there is the "no lesion" prompt (the
  sentence lesion-free training patches had), the class every region competes with.
- a categorical clinical column (kind ``scan``, e.g. ``diagnosis``): one class per value,
  prompts from templates with ``{value}``. The evidence is anywhere in the image, so patch
  scores are averaged.

The spec (:func:`zero_shot_spec`) is plain data: the model bundle stores it, so inference on
new scans asks the questions the model was trained and evaluated with.

A class embedding averages the L2-normalised embeddings of its phrasings and renormalises
(open_clip's zero-shot classifier); with ``ensemble: false`` the first phrasing alone is used.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

REGIONS_TARGET = "regions"
KINDS = ("positive", "negative", "none")


def zero_shot_spec(
    regions: Sequence[str],
    sentences: Mapping[str, Any],
    evaluation: Mapping[str, Any],
    training_rows: pd.DataFrame,
    patch_columns: Sequence[str] = (),
) -> dict:
    """The targets, classes and prompt templates of this run, as plain data, and the targets
    and ``patch_columns`` (``alignment.patch_columns``) this cohort cannot have (``skipped``:
    name -> why).

    ``evaluation["targets"]`` names clinical columns; their classes are
    ``classes`` if given, else the distinct values of ``training_rows[column]`` (the training
    split: the classes a model could have learnt). The regions target needs lesions in the
    training split; a clinical target needs its column and two classes. A target the cohort
    cannot have is skipped, not an error (most public cohorts have no lesion maps, and the
    defaults name the phantom's ``diagnosis``); a run left with no target at all is.
    """
    targets, skipped = {}, {}
    prompts = evaluation["prompts"]
    if _has_lesions(training_rows):
        targets[REGIONS_TARGET] = {
            "kind": "lesion",
            "classes": list(regions),
            "templates": list(prompts["region_templates"]),
            "negative_templates": list(prompts["negative_region_templates"]),
            "none_templates": list(sentences["no_lesion_in_patch"]),
        }
    else:
        skipped[f"target {REGIONS_TARGET}"] = (
            "no lesion information: no scan of the training split has a lesion "
            "(lesions.csv, label maps and a regions column are absent or empty)"
        )
    for name, target in (evaluation.get("targets") or {}).items():
        if name == REGIONS_TARGET:
            raise ValueError(
                f"evaluation.targets: '{REGIONS_TARGET}' is the built-in lesion target"
            )
        column = target["column"]
        if column not in training_rows.columns:
            skipped[f"target {name}"] = f"the scans table has no column '{column}'"
            continue
        classes = target.get("classes")
        if classes is None:
            classes = sorted(training_rows[column].dropna().astype(str).unique())
        if len(classes) < 2:
            skipped[f"target {name}"] = f"needs at least two classes, got {list(classes)}"
            continue
        targets[name] = {
            "kind": "scan",
            "column": column,
            "classes": [str(value) for value in classes],
            "templates": list(target["templates"]),
            "negative_templates": list(target.get("negative_templates") or []),
        }
    for column in patch_columns:
        if column not in training_rows.columns:
            skipped[f"patch column {column}"] = f"the scans table has no column '{column}'"
    for name, reason in skipped.items():
        logger.info("%s skipped: %s", name, reason)
    if not targets:
        raise ValueError(
            "No zero-shot target remains: "
            + "; ".join(f"{name}: {reason}" for name, reason in skipped.items())
            + ". Name a categorical column of the scans table with two or more values in "
            "evaluation.targets (column, templates), or provide lesion information "
            "(lesions.csv with label maps, or a regions column in scans.csv)."
        )
    return {"targets": targets, "skipped": skipped}


def _has_lesions(training_rows: pd.DataFrame) -> bool:
    """Whether any training scan has a lesion region (the regions target can be learnt)."""
    if "regions" not in training_rows.columns:
        return False
    return bool(training_rows["regions"].fillna("").astype(str).str.strip().ne("").any())


def prompt_texts(spec: Mapping) -> pd.DataFrame:
    """Every prompt of every target: ``target, class, kind, phrasing, text`` rows."""
    rows = []
    for name, target in spec["targets"].items():
        for value in target["classes"]:
            for kind, key in (("positive", "templates"), ("negative", "negative_templates")):
                for number, template in enumerate(target[key]):
                    text = template.format(region=value, value=value)
                    rows.append((name, value, kind, number, text))
        for number, text in enumerate(target.get("none_templates", [])):
            rows.append((name, "none", "none", number, text))
    return pd.DataFrame(rows, columns=["target", "class", "kind", "phrasing", "text"])


def ensemble_embedding(vectors: np.ndarray, ensemble: bool = True) -> np.ndarray:
    """One unit vector from the phrasings' embeddings (rows): their renormalised mean, or the
    first phrasing's when ``ensemble`` is false."""
    vectors = np.asarray(vectors, dtype=np.float64)
    if vectors.ndim != 2 or len(vectors) == 0:
        raise ValueError(f"ensemble_embedding needs a (phrasings, dim) matrix, got {vectors.shape}")
    units = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
    mean = units.mean(axis=0) if ensemble else units[0]
    return mean / np.linalg.norm(mean)


def class_embeddings(
    prompts: pd.DataFrame, vectors: np.ndarray, target: str, kind: str, ensemble: bool
) -> np.ndarray:
    """(classes, dim) embeddings of ``target``'s classes for prompts of ``kind``, in the
    order of the spec; ``prompts`` are :func:`prompt_texts` rows and ``vectors`` their
    embeddings (same order)."""
    if kind not in KINDS:
        raise ValueError(f"prompt kind must be one of {KINDS}, got {kind!r}")
    rows = prompts.reset_index(drop=True)
    chosen = rows[(rows["target"] == target) & (rows["kind"] == kind)]
    if chosen.empty:
        raise ValueError(f"no {kind} prompts for zero-shot target '{target}'")
    classes = list(dict.fromkeys(chosen["class"]))
    return np.stack(
        [
            ensemble_embedding(vectors[chosen.index[chosen["class"] == value]], ensemble)
            for value in classes
        ]
    )
