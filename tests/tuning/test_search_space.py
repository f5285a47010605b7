import pytest

from mriclip.tuning.search_space import SearchSpaceError, parse_search_space, resolve

ALIGNMENT = {
    "clip": {"init_temperature": 0.07, "loss": "clip"},
    "training": {"lr_vision": 1e-4, "lr_text": 1e-5, "steps": 10},
}


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"type": "float", "low": 0, "high": 1}, "needs 'path'"),
        (
            {"path": "training.lr_vision", "type": "normal", "low": 0, "high": 1},
            "type must be one of",
        ),
        (
            {"path": "training.lr_vision", "type": "float", "low": 1, "high": 0.5},
            r"low \(1\) must be",
        ),
        (
            {"path": "training.lr_vision", "type": "float", "low": 0, "high": 1, "log": True},
            "log scale needs low > 0",
        ),
        ({"path": "training.lr_vision", "type": "float", "low": "a", "high": 1}, "numeric 'low'"),
        (
            {"path": "training.momentum", "type": "float", "low": 0, "high": 1},
            "'training.momentum' is not a parameter of alignment",
        ),
        ({"path": "clip.loss", "type": "categorical"}, "non-empty 'choices'"),
        (
            {"path": "clip.loss", "type": "categorical", "choices": ["clip"], "prior": 1},
            r"unknown key\(s\) \['prior'\]",
        ),
        ("training.lr_vision", "must be a mapping"),
    ],
)
def test_malformed_entries_are_rejected_with_their_name(entry, message):
    with pytest.raises(SearchSpaceError, match=message) as error:
        parse_search_space({"bad_entry": entry}, ALIGNMENT)
    assert "tuning.search_space.bad_entry" in str(error.value)


def test_empty_space_is_rejected():
    with pytest.raises(SearchSpaceError, match="non-empty"):
        parse_search_space({}, ALIGNMENT)


def test_resolve_applies_values_and_ratios_without_touching_the_base():
    space = parse_search_space(
        {
            "lr": {
                "path": "training.lr_vision",
                "type": "float",
                "low": 1e-5,
                "high": 1e-2,
                "log": True,
            },
            "ratio": {
                "path": "training.lr_text",
                "relative_to": "training.lr_vision",
                "type": "float",
                "low": 0.01,
                "high": 1.0,
            },
            "loss": {"path": "clip.loss", "type": "categorical", "choices": ["clip", "siglip"]},
        },
        ALIGNMENT,
    )
    params = resolve(ALIGNMENT, space, {"lr": 2e-3, "ratio": 0.1, "loss": "siglip"})
    assert params["training"]["lr_vision"] == 2e-3
    assert params["training"]["lr_text"] == pytest.approx(2e-4)
    assert params["clip"] == {"init_temperature": 0.07, "loss": "siglip"}
    assert params["training"]["steps"] == 10
    assert ALIGNMENT["training"]["lr_vision"] == 1e-4


def test_current_values_are_the_defaults_as_sampled_values():
    from mriclip.tuning.search_space import current_values

    space = parse_search_space(
        {
            "lr": {"path": "training.lr_vision", "type": "float", "low": 1e-5, "high": 1e-2},
            "ratio": {
                "path": "training.lr_text",
                "relative_to": "training.lr_vision",
                "type": "float",
                "low": 0.01,
                "high": 1.0,
            },
            "loss": {"path": "clip.loss", "type": "categorical", "choices": ["clip", "siglip"]},
        },
        ALIGNMENT,
    )
    values = current_values(space, ALIGNMENT)
    assert values == {"lr": 1e-4, "ratio": pytest.approx(0.1), "loss": "clip"}
    assert resolve(ALIGNMENT, space, values)["training"]["lr_text"] == pytest.approx(1e-5)
    narrow = parse_search_space(
        {"lr": {"path": "training.lr_vision", "type": "float", "low": 1e-3, "high": 1e-2}},
        ALIGNMENT,
    )
    with pytest.raises(SearchSpaceError, match="outside the search space"):
        current_values(narrow, ALIGNMENT)
