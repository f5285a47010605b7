"""The search space of a study, declared in ``parameters_tuning.yml`` and checked strictly.

Each entry names a dotted ``path`` into the ``alignment`` parameters and a distribution::

    lr_vision: {path: training.lr_vision, type: float, low: 1.0e-5, high: 3.0e-3, log: true}
    text_to_vision_lr: {path: training.lr_text, relative_to: training.lr_vision,
                        type: float, low: 0.01, high: 1.0, log: true}
    accumulation: {path: training.accumulation_steps, type: categorical, choices: [1, 4, 8]}

``relative_to`` makes the sampled value a ratio: the path gets ratio × the other path's value
(the paper's "vision LR an order of magnitude above the text LR").
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna

TYPES = ("float", "int", "categorical")
KEYS = {"path", "type", "low", "high", "log", "step", "choices", "relative_to"}


class SearchSpaceError(ValueError):
    """A malformed search-space entry; the message names the entry and the fix."""


@dataclass(frozen=True)
class SearchParameter:
    name: str
    path: str
    type: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple | None = None
    relative_to: str | None = None

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(
                self.name, int(self.low), int(self.high), log=self.log, step=int(self.step or 1)
            )
        return trial.suggest_categorical(self.name, list(self.choices))


def _entry(name: str, spec: Any, alignment: Mapping) -> SearchParameter:
    where = f"tuning.search_space.{name}"
    if not isinstance(spec, Mapping):
        raise SearchSpaceError(f"{where} must be a mapping with path and type, got {spec!r}")
    unknown = set(spec) - KEYS
    if unknown:
        raise SearchSpaceError(
            f"{where} has unknown key(s) {sorted(unknown)}; valid: {sorted(KEYS)}"
        )
    if "path" not in spec or "type" not in spec:
        raise SearchSpaceError(f"{where} needs 'path' (e.g. training.lr_vision) and 'type'")
    for key in ("path", "relative_to"):
        if spec.get(key) is not None:
            try:
                get_path(alignment, spec[key])
            except KeyError:
                raise SearchSpaceError(
                    f"{where}.{key} '{spec[key]}' is not a parameter of alignment"
                ) from None
    kind = spec["type"]
    if kind not in TYPES:
        raise SearchSpaceError(f"{where}.type must be one of {TYPES}, got {kind!r}")
    if kind == "categorical":
        choices = spec.get("choices")
        if not isinstance(choices, list | tuple) or not choices:
            raise SearchSpaceError(f"{where} is categorical and needs a non-empty 'choices' list")
        return SearchParameter(
            name, spec["path"], kind, choices=tuple(choices), relative_to=spec.get("relative_to")
        )
    low, high = spec.get("low"), spec.get("high")
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (low, high)):
        raise SearchSpaceError(f"{where} needs numeric 'low' and 'high', got {low!r}, {high!r}")
    if low >= high:
        raise SearchSpaceError(f"{where}: low ({low}) must be below high ({high})")
    if spec.get("log") and low <= 0:
        raise SearchSpaceError(f"{where}: a log scale needs low > 0, got {low}")
    return SearchParameter(
        name,
        spec["path"],
        kind,
        float(low),
        float(high),
        bool(spec.get("log", False)),
        spec.get("step"),
        relative_to=spec.get("relative_to"),
    )


def parse_search_space(spec: Mapping, alignment: Mapping) -> list[SearchParameter]:
    if not isinstance(spec, Mapping) or not spec:
        raise SearchSpaceError("tuning.search_space must be a non-empty mapping of entries")
    return [_entry(name, entry, alignment) for name, entry in spec.items()]


def get_path(params: Mapping, path: str) -> Any:
    value = params
    for key in path.split("."):
        value = value[key]
    return value


def with_values(params: Mapping, values: Mapping[str, Any]) -> dict:
    """A deep copy of ``params`` with each dotted path set to its value."""
    result = copy.deepcopy(dict(params))
    for path, value in values.items():
        *parents, leaf = path.split(".")
        node = result
        for key in parents:
            node = node.setdefault(key, {})
        node[leaf] = value
    return result


def resolve(alignment: Mapping, space: list[SearchParameter], sampled: Mapping) -> dict:
    """The alignment parameters of one trial: base values with the sampled ones applied;
    a ratio multiplies the (possibly also sampled) value of its ``relative_to`` path."""
    params = with_values(alignment, {p.path: sampled[p.name] for p in space if not p.relative_to})
    ratios = {
        p.path: sampled[p.name] * get_path(params, p.relative_to) for p in space if p.relative_to
    }
    return with_values(params, ratios)


def current_values(space: list[SearchParameter], alignment: Mapping) -> dict[str, Any]:
    """The search parameters' values in ``alignment`` (ratios as ratios): enqueued as a
    study's first trial, the default settings are scored under the same trial budget."""
    values = {}
    for parameter in space:
        value = get_path(alignment, parameter.path)
        if parameter.relative_to:
            value = value / get_path(alignment, parameter.relative_to)
        inside = (
            value in parameter.choices
            if parameter.type == "categorical"
            else parameter.low <= value <= parameter.high
        )
        if not inside:
            raise SearchSpaceError(
                f"tuning.search_space.{parameter.name}: the current value {value!r} lies outside "
                "the search space, so the defaults cannot be enqueued; widen the range or set "
                "tuning.enqueue_defaults: false"
            )
        values[parameter.name] = value
    return values
