"""Tabular rows to natural-language sentences, as in the paper's §2.1.2.

A scan's row (age, sex, ...) and its lesion regions become e.g. "The age of the subject is
57. The gender of the patient is female. A tumor has been identified in the frontal area of
the brain. Additionally, a lesion is present in the occipital area." The canonical sentence
(no random generator) always uses the first wording of every list; training passes a
generator to draw paraphrases and a random lesion order, so the text encoder cannot latch
onto one fixed string.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

COUNT_WORDS = {2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight"}


@dataclass(frozen=True)
class SentenceTemplates:
    """Wording of the sentences. Every list holds paraphrases; the first is canonical.

    ``columns`` maps a tabular column to its sentence, with ``{value}`` for the cell.
    Lesion sentences take ``{region}``, plural ones also ``{count}``.
    """

    columns: Mapping[str, Sequence[str]] = field(
        default_factory=lambda: {
            "age": ["The age of the subject is {value}.", "The patient is {value} years old."],
            "sex": ["The gender of the patient is {value}.", "The patient is {value}."],
        }
    )
    first_lesion: Sequence[str] = (
        "A tumor has been identified in the {region} area of the brain.",
        "There is a lesion in the {region} section.",
        "A lesion is located in the {region} region.",
    )
    first_lesions: Sequence[str] = (
        "{count} tumors have been identified in the {region} area of the brain.",
        "There are {count} lesions in the {region} section.",
    )
    next_lesion: Sequence[str] = (
        "Additionally, a lesion is present in the {region} area.",
        "Furthermore, there is a lesion in the {region} section.",
        "Moreover, a tumor is seen in the {region} region.",
    )
    next_lesions: Sequence[str] = (
        "Additionally, {count} lesions are present in the {region} area.",
        "Furthermore, there are {count} lesions in the {region} section.",
    )
    no_lesion: Sequence[str] = ("No lesion has been identified.",)
    #: A patch without a lesion (lesion-aware patch training; the zero-shot "no lesion" class).
    no_lesion_in_patch: Sequence[str] = (
        "No lesion is visible in this section.",
        "This section shows no lesion.",
    )
    #: What a missing cell (empty, NaN, BIDS ``n/a``) reads as; None leaves its sentence out.
    missing_value: str | None = None
    prompt: str = "There is a lesion in the {region} section."

    @classmethod
    def from_params(cls, params: Mapping) -> SentenceTemplates:
        """Build from a ``parameters.yml`` mapping; unknown keys are an error, not ignored."""
        known = set(cls.__dataclass_fields__)
        unknown = set(params) - known
        if unknown:
            raise ValueError(
                f"Unknown sentence template keys {sorted(unknown)}; valid keys: {sorted(known)}"
            )
        values = {}
        for key, value in params.items():
            if key == "columns":
                value = {column: _as_list(key, text) for column, text in value.items()}
            elif key not in ("missing_value", "prompt"):
                value = tuple(_as_list(key, value))
            values[key] = value
        return cls(**values)

    def for_cohort(self, columns: Collection[str], describes_lesions: bool) -> SentenceTemplates:
        """These templates for a cohort with ``columns``: a templated column the cohort lacks
        is left out (not "unknown" in every sentence), and without lesion information
        (``describes_lesions`` false) no sentence claims that a scan or patch has no lesion."""
        kept = {column: wording for column, wording in self.columns.items() if column in columns}
        if describes_lesions:
            return replace(self, columns=kept)
        return replace(self, columns=kept, no_lesion=(), no_lesion_in_patch=())


def _as_list(key: str, value) -> list[str]:
    wordings = [value] if isinstance(value, str) else list(value)
    if not wordings or not all(isinstance(text, str) for text in wordings):
        raise ValueError(f"Sentence template '{key}' must be a string or a non-empty list of them")
    return wordings


def format_value(value) -> str | None:
    """Cell value as text: integral floats lose their '.0'; missing values become None."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        return str(int(value)) if float(value).is_integer() else f"{value:.1f}"
    text = str(value).strip()
    # "none" stays a value (a diagnosis of none); Python's None is caught above.
    return text if text and text.lower() not in ("nan", "null", "n/a") else None


def describe_scan(
    row: Mapping,
    regions: Sequence[str],
    templates: SentenceTemplates,
    rng: np.random.Generator | None = None,
) -> str:
    """One sentence for a scan's row and the regions of its lesions (repeats = several lesions).

    Without ``rng`` the result is canonical: first wordings, regions in the given order.
    """
    return _describe(row, regions, templates, templates.columns, templates.no_lesion, rng)


def describe_patch(
    row: Mapping,
    regions: Sequence[str],
    templates: SentenceTemplates,
    columns: Sequence[str] = (),
    rng: np.random.Generator | None = None,
) -> str:
    """The sentence of a patch: exactly the lesions inside it (``regions``, repeats = several
    lesions), or ``no_lesion_in_patch``, after the scan-level ``columns`` of ``row`` that the
    image shows everywhere (e.g. a diagnosis of atrophy). Canonical without ``rng``."""
    unknown = [column for column in columns if column not in templates.columns]
    if unknown:
        raise ValueError(
            f"patch sentence columns {unknown} have no template in sentences.columns "
            f"(templated: {sorted(templates.columns)})"
        )
    wordings = {column: templates.columns[column] for column in columns}
    return _describe(row, regions, templates, wordings, templates.no_lesion_in_patch, rng)


def _describe(
    row: Mapping,
    regions: Sequence[str],
    templates: SentenceTemplates,
    column_wordings: Mapping[str, Sequence[str]],
    no_lesion: Sequence[str],
    rng: np.random.Generator | None,
) -> str:
    def choose(wordings: Sequence[str]) -> str:
        return wordings[0] if rng is None else wordings[int(rng.integers(len(wordings)))]

    parts = []
    for column, wordings in column_wordings.items():
        value = format_value(row.get(column))
        if value is not None:
            parts.append(choose(wordings).format(value=value))
        elif templates.missing_value is not None:  # first wording: "unknown years old" is odd
            parts.append(wordings[0].format(value=templates.missing_value))

    counts = Counter(regions)
    ordered = list(dict.fromkeys(regions))
    if rng is not None:
        ordered = [ordered[i] for i in rng.permutation(len(ordered))]
    if not ordered and no_lesion:
        parts.append(choose(no_lesion))
    for position, region in enumerate(ordered):
        count = counts[region]
        if position == 0:
            wordings = templates.first_lesion if count == 1 else templates.first_lesions
        else:
            wordings = templates.next_lesion if count == 1 else templates.next_lesions
        sentence = choose(wordings).format(region=region, count=COUNT_WORDS.get(count, count))
        parts.append(sentence[0].upper() + sentence[1:])
    return " ".join(parts)


def region_prompts(regions: Sequence[str], templates: SentenceTemplates) -> dict[str, str]:
    """The zero-shot prompt of each region, e.g. "There is a lesion in the frontal section."."""
    return {region: templates.prompt.format(region=region) for region in regions}
