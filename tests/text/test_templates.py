import numpy as np
import pytest

from mriclip.text.templates import (
    SentenceTemplates,
    describe_patch,
    describe_scan,
    region_prompts,
)


def test_paper_example_is_reproduced_exactly():
    sentence = describe_scan(
        {"age": 57, "sex": "female"}, ["frontal", "occipital"], SentenceTemplates()
    )
    assert sentence == (
        "The age of the subject is 57. The gender of the patient is female. A tumor has been "
        "identified in the frontal area of the brain. Additionally, a lesion is present in the "
        "occipital area."
    )


@pytest.mark.parametrize("missing", [None, float("nan"), "", "NaN", "n/a"])
def test_missing_values_are_left_out_or_read_the_missing_value_never_nan(missing):
    sentence = describe_scan({"age": missing, "sex": "male"}, [], SentenceTemplates())
    assert sentence == "The gender of the patient is male. No lesion has been identified."
    unknown = SentenceTemplates(missing_value="unknown")
    sentence = describe_scan({"age": missing, "sex": "male"}, [], unknown)
    assert sentence.startswith("The age of the subject is unknown.")
    assert "nan" not in sentence.lower() and "n/a" not in sentence


def test_for_cohort_keeps_the_cohorts_columns_and_without_lesions_says_nothing_of_them():
    templates = SentenceTemplates(
        columns={"age": ["The age is {value}."], "diagnosis": ["The diagnosis is {value}."]}
    )
    row = {"age": 50, "diagnosis": None}
    lesions = templates.for_cohort(["scan_id", "age"], describes_lesions=True)
    assert list(lesions.columns) == ["age"]
    assert describe_scan(row, [], lesions) == "The age is 50. No lesion has been identified."
    none = templates.for_cohort(["scan_id", "age"], describes_lesions=False)
    assert describe_scan(row, [], none) == "The age is 50."
    assert describe_patch(row, [], none, ["age"]) == "The age is 50."


def test_counts_and_integral_floats():
    sentence = describe_scan(
        {"age": 61.0}, ["temporal", "temporal", "parietal"], SentenceTemplates()
    )
    assert "is 61." in sentence
    assert "Two tumors have been identified in the temporal area" in sentence
    assert "Additionally, a lesion is present in the parietal area." in sentence


def test_paraphrases_are_drawn_and_repeat_by_seed():
    row, regions, templates = (
        {"age": 30, "sex": "male"},
        ["frontal", "cerebellar"],
        SentenceTemplates(),
    )
    draws = {describe_scan(row, regions, templates, np.random.default_rng(s)) for s in range(40)}
    assert len(draws) > 10
    first = describe_scan(row, regions, templates, np.random.default_rng(7))
    assert first == describe_scan(row, regions, templates, np.random.default_rng(7))
    for sentence in draws:  # every paraphrase still names every region
        assert "frontal" in sentence and "cerebellar" in sentence


def test_from_params_checks_keys_and_types():
    templates = SentenceTemplates.from_params(
        {"columns": {"age": "Age: {value}."}, "prompt": "Lesion: {region}."}
    )
    assert describe_scan({"age": 3}, [], templates).startswith("Age: 3.")
    assert region_prompts(["frontal"], templates) == {"frontal": "Lesion: frontal."}
    with pytest.raises(ValueError, match="Unknown sentence template keys \\['colums'\\]"):
        SentenceTemplates.from_params({"colums": {}})
    with pytest.raises(ValueError, match="'first_lesion' must be a string"):
        SentenceTemplates.from_params({"first_lesion": []})


def test_region_prompts_follow_the_paper():
    prompts = region_prompts(["frontal", "cerebellar"], SentenceTemplates())
    assert prompts["cerebellar"] == "There is a lesion in the cerebellar section."
