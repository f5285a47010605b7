"""Where a report came from: the run's settings (chosen parameter groups), the catalog versions
of its datasets, and the one-line run information under the title."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import yaml

from mriclip.reporting.blocks import Block, absent, format_number, nested, note, table

_NOT_SET = object()


class _SettingsDumper(yaml.SafeDumper):
    """Block-style YAML, except lists of plain values stay on one line ([32, 32, 32])."""


def _represent_list(dumper: yaml.SafeDumper, items: list) -> yaml.Node:
    flat = all(not isinstance(item, (Mapping, list, tuple)) for item in items)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", items, flow_style=flat)


_SettingsDumper.add_representer(list, _represent_list)
_SettingsDumper.add_representer(tuple, _represent_list)


def settings_section(parameters: Mapping | None, shown: Sequence[str]) -> list[Block]:
    """The chosen parameter groups: single values in a table, groups as YAML blocks.

    Groups not in ``parameters`` are named rather than silently left out.
    """
    if not parameters:
        return [absent("The run's parameters were not passed to the report.")]
    values, groups, missing = [], [], []
    for path in shown:
        # A sentinel, since a parameter may legitimately be null.
        value = nested(parameters, path.split("."), default=_NOT_SET)
        if value is _NOT_SET:
            missing.append(path)
            continue
        if not isinstance(value, Mapping):
            shown_value = ", ".join(map(str, value)) if isinstance(value, list) else value
            values.append([path, format_number(shown_value)])
            continue
        text = yaml.dump(dict(value), Dumper=_SettingsDumper, sort_keys=False, width=1000)
        groups.append((path, text))
    blocks = [table(["parameter", "value"], values)] if values else []
    blocks.append({"kind": "settings", "groups": groups})
    if missing:
        blocks.append(note("Not set in this run: " + ", ".join(missing) + "."))
    return blocks


def versions_section(run_metadata: Mapping | None) -> list[Block]:
    if not run_metadata:
        return [absent("No catalog version record: run metadata was not passed to the report.")]
    if not run_metadata.get("versions"):
        return [absent("No versioned dataset took part in this run.")]
    rows = sorted(run_metadata["versions"].items())
    return [
        table(["dataset", "version"], rows),
        note("Load any of them again with e.g. `kedro run --load-versions=<dataset>:<version>`."),
    ]


def run_info(run_metadata: Mapping | None) -> str:
    if not run_metadata:
        return "Run metadata absent."
    labels = {
        "save_version": "save version",
        "kedro_env": "env",
        "pipeline": "pipeline",
        "device": "device",
        "mriclip_version": "mriclip",
    }
    parts = [
        f"{label} {run_metadata[key]}" for key, label in labels.items() if run_metadata.get(key)
    ]
    return " · ".join(parts)


def environment_section(zero_shot_metrics: Mapping | None) -> list[Block]:
    """Thread counts, CPU kernels and package versions the metrics were computed with:
    floating-point sums round differently with other thread counts or kernels, so figures
    compare only where these agree."""
    environment = (zero_shot_metrics or {}).get("environment")
    if not environment:
        return [absent("No compute environment recorded with the metrics of this run.")]
    threads = (environment.get("torch_threads"), environment.get("torch_interop_threads"))
    machine = (environment.get("cpu_count"), environment.get("machine"), environment.get("python"))
    rows = [
        ("torch threads (intra-op, inter-op)", ", ".join(map(str, threads))),
        ("BLAS and OpenMP pools (library:threads)", ", ".join(environment.get("blas") or [])),
        ("ITK threads", str(environment.get("itk_threads", "n/a"))),
        *((name, str(value)) for name, value in environment["env"].items()),
        (
            "CPU kernels (library: instruction set)",
            ", ".join(f"{k}: {v}" for k, v in environment.get("cpu_kernels", {}).items()) or "n/a",
        ),
        ("CPU cores, machine, Python", ", ".join(map(str, machine))),
    ]
    rows += [(name, str(version)) for name, version in environment["versions"].items()]
    return [
        table(["setting", "value"], rows),
        note(
            "Figures of two runs compare exactly only where these agree "
            "(docs/benchmarks.md, Reproducibility)."
        ),
    ]
