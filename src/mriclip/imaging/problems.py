"""The problems table: every item a stage skipped or raised for, with the fix.

Each problem is either raised (``on_invalid="raise"``: one error listing all problems, each
naming the file or row and the fix) or recorded in the problems table and the item skipped
(``on_invalid="skip"``). Nothing is dropped without a row in that table.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import pandas as pd

logger = logging.getLogger(__name__)

PROBLEM_COLUMNS = ["stage", "scan_id", "item", "problem", "fix"]


class InputDataError(ValueError):
    """Raised when input data is invalid and ``on_invalid`` is ``raise``."""


@dataclass
class ProblemLog:
    """Collects problems; `raise_if_any` turns them into one readable error."""

    stage: str
    rows: list[dict] = field(default_factory=list)

    def add(self, scan_id: str | None, item: str, problem: str, fix: str) -> None:
        self.rows.append(
            {"stage": self.stage, "scan_id": scan_id, "item": item, "problem": problem, "fix": fix}
        )
        logger.warning("%s: %s: %s (%s)", self.stage, item, problem, fix)

    def table(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=PROBLEM_COLUMNS)

    def raise_if_any(self, on_invalid: str) -> None:
        if on_invalid not in ("raise", "skip"):
            raise ValueError(f"on_invalid must be 'raise' or 'skip', got {on_invalid!r}")
        if self.rows and on_invalid == "raise":
            lines = [f"- {r['item']}: {r['problem']} -> {r['fix']}" for r in self.rows]
            raise InputDataError(
                f"{len(self.rows)} problem(s) in the input data ({self.stage}):\n"
                + "\n".join(lines)
                + "\nFix them, or set on_invalid: skip to skip these items and list them in "
                "the catalog_problems table."
            )


def describe_error(error: BaseException) -> str:
    """``Type: message`` of an error and of the errors that caused it: MONAI wraps the real
    failure (e.g. a ZeroDivisionError in a resize) in a RuntimeError naming only the
    transform."""
    parts, seen = [], set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        parts.append(f"{type(error).__name__}: {error}")
        error = error.__cause__ or error.__context__
    return " <- caused by ".join(parts)


def require_columns(table: pd.DataFrame, columns: Sequence[str], table_name: str) -> None:
    missing = [column for column in columns if column not in table.columns]
    if missing:
        raise InputDataError(
            f"{table_name} lacks required column(s) {missing}; it has {list(table.columns)}. "
            "Rename the columns or set the column names in parameters_data_engineering.yml."
        )
