"""The zero-shot spec of a cohort: targets it cannot have are skipped with the reason, and a
cohort left with none fails before training, naming the parameters to set."""

import pandas as pd
import pytest

from mriclip.evaluation.prompts import zero_shot_spec
from tests.pipelines.helpers import load_parameters

PARAMETERS = load_parameters("base")
REGIONS = PARAMETERS["regions"]


def spec(rows: pd.DataFrame, patch_columns=("diagnosis",), evaluation=None) -> dict:
    return zero_shot_spec(
        REGIONS, PARAMETERS["sentences"], evaluation or PARAMETERS["evaluation"], rows,
        patch_columns,
    )  # fmt: skip


def test_a_cohort_with_lesions_and_diagnosis_has_both_targets():
    rows = pd.DataFrame({"regions": ["frontal", ""], "diagnosis": ["atrophy", "none"]})
    result = spec(rows)
    assert list(result["targets"]) == ["regions", "diagnosis"]
    assert result["targets"]["diagnosis"]["classes"] == ["atrophy", "none"]
    assert result["skipped"] == {}


def test_without_lesions_or_diagnosis_column_each_is_skipped_with_its_reason(caplog):
    rows = pd.DataFrame({"regions": ["", None], "diagnosis": ["atrophy", "none"]})
    result = spec(rows)
    assert list(result["targets"]) == ["diagnosis"]
    assert result["skipped"]["target regions"].startswith("no lesion information")
    rows = pd.DataFrame({"regions": ["frontal", ""], "age": [30, 40]})
    caplog.clear()
    with caplog.at_level("INFO", logger="mriclip.evaluation.prompts"):
        result = spec(rows)
    assert list(result["targets"]) == ["regions"]
    assert result["skipped"] == {
        "target diagnosis": "the scans table has no column 'diagnosis'",
        "patch column diagnosis": "the scans table has no column 'diagnosis'",
    }
    assert [r.message for r in caplog.records] == [
        "target diagnosis skipped: the scans table has no column 'diagnosis'",
        "patch column diagnosis skipped: the scans table has no column 'diagnosis'",
    ]


def test_a_single_class_target_is_skipped():
    rows = pd.DataFrame({"regions": ["frontal", ""], "diagnosis": ["none", "none"]})
    assert spec(rows)["skipped"] == {"target diagnosis": "needs at least two classes, got ['none']"}


def test_no_target_left_names_the_parameters_to_set():
    rows = pd.DataFrame({"regions": ["", ""], "group": ["control", "patient"]})
    with pytest.raises(ValueError, match="No zero-shot target remains") as error:
        spec(rows, patch_columns=())
    assert "evaluation.targets" in str(error.value)
    assert "lesions.csv" in str(error.value)
