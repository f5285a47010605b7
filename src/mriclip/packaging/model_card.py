"""MODEL_CARD.md of an export: intended use, training data, the test metrics of the run the
model came from beside their controls, limitations, and how to run it.

The text is the Jinja2 template ``templates/model_card.md.j2`` in this package; this module
gathers what it shows from the run's catalog entries.
"""

from __future__ import annotations

from collections.abc import Mapping
from importlib.resources import files

import jinja2
import pandas as pd

from mriclip.packaging.export import package_versions

#: The test metrics the card shows: (section of zero_shot_metrics, its title).
SECTIONS = (
    ("scan_level", "Scan level: which regions hold a lesion (macro AUC over regions)"),
    ("lesion_detection", "Lesion detection: lesion vs lesion-free test patches (AUC)"),
    ("lesion_level", "Lesion level: a cube centred on each lesion (macro AUC)"),
)
COMPARISONS = ("model", "lesion_ablated", "before_alignment", "random")
#: The headline number of a comparison, first found.
HEADLINES = ("auc_macro", "auc", "auc_micro_pooled")


def headline(result: Mapping) -> dict:
    """``{"metric", "value", "ci"}`` of one comparison's result, or ``{"skipped": why}``."""
    if "skipped" in result:
        return {"skipped": result["skipped"]}
    overall = result.get("overall", result)
    for name in HEADLINES:
        if overall.get(name) is not None:
            return {"metric": name, "value": overall[name], "ci": overall.get(f"{name}_ci")}
    return {"skipped": "no AUC (too few classes or samples in the test split)"}


def metric_rows(zero_shot: Mapping) -> list[dict]:
    """One row per section and target: its title and each comparison's headline."""
    sections = [(key, title, zero_shot.get(key)) for key, title in SECTIONS]
    for name, result in (zero_shot.get("targets") or {}).items():
        sections.append((f"targets.{name}", f"Clinical target {name!r} (scan level)", result))
    rows = []
    for key, title, result in sections:
        if not result:
            continue
        rows.append({"key": key, "title": title,
                     **{c: headline(result[c]) for c in COMPARISONS if c in result}})  # fmt: skip
    return rows


def training_data(splits: pd.DataFrame, lesions: pd.DataFrame) -> dict:
    """Patients and scans per split, and lesions per region in the training split."""
    per_split = {
        split: {"patients": int(rows["patient_id"].nunique()), "scans": len(rows)}
        for split, rows in splits.groupby("split")
    }
    train = set(splits.loc[splits["split"] == "train", "scan_id"])
    regions = {}
    if len(lesions) and "region" in lesions.columns:
        in_train = lesions[lesions["scan_id"].isin(train)]
        regions = {str(k): int(v) for k, v in in_train["region"].value_counts().items()}
    return {"per_split": per_split, "n_patients": int(splits["patient_id"].nunique()),
            "n_scans": len(splits), "lesions_per_region": regions}  # fmt: skip


def render_model_card(
    settings: Mapping,
    zero_shot: Mapping,
    retrieval: Mapping,
    splits: pd.DataFrame,
    lesions: pd.DataFrame,
) -> str:
    """The card's Markdown.

    Args:
        settings: the clip_model bundle's JSON entries (``config``, ``inference``, ...).
        zero_shot: the run's ``zero_shot_metrics``.
        retrieval: the run's ``retrieval_metrics``.
        splits: the run's ``splits`` (scan_id, patient_id, split).
        lesions: the run's ``lesion_table`` (scan_id, region), possibly empty.

    Returns:
        MODEL_CARD.md's text.
    """
    template = files("mriclip.packaging").joinpath("templates/model_card.md.j2").read_text()
    environment = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True,
                                     lstrip_blocks=True, autoescape=False)  # fmt: skip
    retrieval_model = (retrieval.get("scan_level") or {}).get("model", {}).get("overall", {})
    retrieval_random = (retrieval.get("scan_level") or {}).get("random", {}).get("overall", {})
    encoder = settings["config"]["image_encoder"]
    return environment.from_string(template).render(
        config=settings["config"],
        encoder_settings=", ".join(f"{k}={v}" for k, v in sorted(encoder.items()) if k != "name"),
        versions=package_versions(),
        inference=settings["inference"],
        targets=settings["inference"]["zero_shot"]["targets"],
        calibrated=bool(settings.get("calibration") or settings["inference"].get("calibration")),
        rows=metric_rows(zero_shot),
        comparisons=COMPARISONS,
        retrieval={"model": retrieval_model, "random": retrieval_random},
        data=training_data(splits, lesions),
    )
