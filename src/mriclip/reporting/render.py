"""One self-contained HTML report of a run: headline, data, results, figures, settings.

``render_report`` assembles the run's tables, metric dicts, figures and metadata into *blocks*
(:mod:`mriclip.reporting.blocks`) and renders them with the Jinja2 template
``templates/report.html.j2`` (autoescaped: scan ids, problem texts and parameter values from data
can never inject markup) and ``templates/report.css``; the figures are embedded as base64 PNG,
so the single file can be mailed or archived. Every part is optional in the sense that a
missing or empty one is *stated* in the report ("not computed in this run").
"""

from __future__ import annotations

import base64
import functools
import logging
from collections.abc import Mapping, Sequence
from importlib.resources import files

import jinja2
import pandas as pd
from matplotlib.figure import Figure

from mriclip.reporting.blocks import Block, absent, figure_png, heading
from mriclip.reporting.data_section import data_section
from mriclip.reporting.provenance import (
    environment_section,
    run_info,
    settings_section,
    versions_section,
)
from mriclip.reporting.sections import (
    headline,
    pretraining_section,
    retrieval_section,
    training_section,
    zero_shot_section,
)

logger = logging.getLogger(__name__)

DEFAULT_SETTINGS_SHOWN = (
    "seed",
    "regions",
    "data_engineering.preprocessing",
    "pretraining",
    "alignment",
)

#: Figure name → caption, in the order the report shows them.
FIGURE_CAPTIONS = {
    "evidence": (
        "Where the model sees lesions: test scans (axial slice through the largest lesion) with "
        "their true lesions outlined (green), the lesion evidence 1 − p(no lesion) of the "
        "patches blended over the slice, and the same on the scan's lesion-ablated twin."
    ),
    "training_curves": (
        "Alignment training: contrastive loss (and validation loss), temperature and learning "
        "rates by step."
    ),
    "roc": (
        "Scan-level zero-shot one-vs-rest ROC curve per region on the test split; dashed: chance."
    ),
    "tsne": (
        "t-SNE of image (circles) and text (triangles) embeddings before and after alignment, "
        "coloured by region. Images and texts forming two separate clouds show a modality gap."
    ),
    "retrieval_grid": (
        "Retrieval: for each region prompt (rows) the best-scored test scans (middle slice) with "
        "their score; green frame: the scan has a lesion in that region, red: it has not."
    ),
    "reconstruction": (
        "Masked-autoencoder pretraining on held-out volumes: input, masked input and "
        "reconstruction (middle axial slices)."
    ),
}

#: What each level measures: said in the report's header, next to the headline.
MEASURES = (
    "Scan level: the whole test scan, covered by patches each scored against every region "
    "prompt and the no-lesion prompt, aggregated per region — what mriclip gives for a new "
    "scan without annotations.",
    "Lesion-ablated: the same metric on the same test scans with their lesions removed "
    "(phantom: rendered again with invisible lesions; user data: the labelled lesions "
    "inpainted). A score that comes from the lesions falls to chance there.",
    "Lesion detection: lesion versus lesion-free test patches, scored by 1 − p(no lesion).",
    "Lesion level (the paper's protocol): a cube centred on each annotated lesion. The cube's "
    "position in the head alone can give away the region, so read it beside its ablated control.",
)


def _figure(name: str, figure: bytes | Figure | None) -> list[Block]:
    caption = FIGURE_CAPTIONS.get(name, name.replace("_", " "))
    if figure is None:
        return [heading(name.replace("_", " ")), absent("Figure not produced in this run.")]
    encoded = base64.b64encode(figure_png(figure)).decode("ascii")
    return [{"kind": "figure", "src": f"data:image/png;base64,{encoded}", "caption": caption}]


@functools.cache
def _template() -> tuple[jinja2.Template, str]:
    folder = files("mriclip.reporting") / "templates"
    environment = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = environment.from_string((folder / "report.html.j2").read_text(encoding="utf-8"))
    return template, (folder / "report.css").read_text(encoding="utf-8")


def render_report(
    *,
    nifti_catalog: pd.DataFrame | None = None,
    catalog_problems: pd.DataFrame | None = None,
    scan_sentences: pd.DataFrame | None = None,
    splits: pd.DataFrame | None = None,
    lesion_table: pd.DataFrame | None = None,
    zero_shot_metrics: Mapping | None = None,
    retrieval_metrics: Mapping | None = None,
    baseline_metrics: Mapping | None = None,
    alignment_history: pd.DataFrame | None = None,
    pretraining_summary: Mapping | None = None,
    figures: Mapping[str, bytes | Figure | None] | None = None,
    parameters: Mapping | None = None,
    run_metadata: Mapping | None = None,
    title: str = "mriclip run report",
    settings_shown: Sequence[str] = DEFAULT_SETTINGS_SHOWN,
    decimals: int = 3,
) -> str:
    """The whole report as one self-contained HTML document (see the module docstring).

    ``figures`` maps names (``FIGURE_CAPTIONS`` keys first, in that order, then any others) to
    PNG bytes or matplotlib Figures; None means "not produced". ``settings_shown`` lists dotted
    paths into ``parameters`` to display.
    """
    figures = dict(figures or {})
    figure_names = [name for name in FIGURE_CAPTIONS if name in figures]
    figure_names += [name for name in figures if name not in FIGURE_CAPTIONS]
    regions = list((parameters or {}).get("regions") or [])
    figure_blocks = [block for name in figure_names for block in _figure(name, figures[name])]
    sections = [
        (
            "data",
            "Data",
            data_section(
                nifti_catalog, catalog_problems, scan_sentences, splits, lesion_table, regions
            ),
        ),  # fmt: skip
        (
            "zero-shot",
            "Zero-shot classification",
            zero_shot_section(zero_shot_metrics, baseline_metrics, decimals),
        ),
        ("retrieval", "Retrieval", retrieval_section(retrieval_metrics, decimals)),
        ("pretraining", "Pretraining", pretraining_section(pretraining_summary, decimals)),
        ("training", "Alignment training", training_section(alignment_history, decimals)),
        ("figures", "Figures", figure_blocks or [absent("No figures were passed to the report.")]),
        ("settings", "Settings", settings_section(parameters, settings_shown)),
        ("versions", "Catalog versions this report came from", versions_section(run_metadata)),
        ("environment", "Compute environment", environment_section(zero_shot_metrics)),
    ]
    summary = headline(zero_shot_metrics, retrieval_metrics, baseline_metrics, decimals)
    logger.info("report: %s", summary)
    template, css = _template()
    return (
        template.render(
            title=title,
            css=css,
            run_info=run_info(run_metadata),
            headline=summary,
            measures=[{"kind": "list", "entries": list(MEASURES)}],
            sections=[
                {"anchor": anchor, "title": name, "blocks": blocks}
                for anchor, name, blocks in sections
            ],
        )
        + "\n"
    )
