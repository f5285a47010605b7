"""What the studies of whole chains share (``seeds.py``, ``difficulty.py``, ``transfer.py``):
each run is ``kedro run`` in its own copy of the project (conf, src, pyproject; a fresh data/),
so runs are independent and several can go at once; its metrics are read back from the
versioned outputs and summarised as table rows; tables replace their section of
docs/benchmarks.md.
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

PROJECT = Path(__file__).resolve().parents[1]
DOCS = PROJECT / "docs" / "benchmarks.md"
REGIONS = ("frontal", "parietal", "temporal", "occipital", "cerebellar")

#: Table column -> dotted path into zero_shot_metrics (an interval sits beside as ``<name>_ci``).
HEADLINE = {
    "scan AUC": "scan_level.model.overall.auc_macro",
    "scan ablated": "scan_level.lesion_ablated.overall.auc_macro",
    "detection": "lesion_detection.model.auc",
    "detection ablated": "lesion_detection.lesion_ablated.auc",
    "lesion level": "lesion_level.model.overall.auc_macro",
    "lesion ablated": "lesion_level.lesion_ablated.overall.auc_macro",
    "scan ECE": "scan_level.model.overall.ece",
}
PER_REGION = {region: f"scan_level.model.per_region.{region}.auc" for region in REGIONS}


@dataclass
class ChainRun:
    """One ``kedro run`` of a project copy: its name, folder, parameters and outcome."""

    name: str
    folder: Path
    params: dict
    pipeline: str | None = None
    from_nodes: str | None = None  # run from this node on, on the folder's data
    seconds: float | None = None
    returncode: int | None = None


def merged(params: Mapping, dotted: str) -> dict:
    """``params`` with ``a.b=1,c=x`` changes (``kedro run --params`` syntax) merged in."""
    # A comma inside brackets belongs to a list value (a.b=[x,y]).
    items = [item.strip() for item in re.split(r",(?![^\[]*\])", dotted) if item.strip()]
    return OmegaConf.to_container(OmegaConf.merge(params, OmegaConf.from_dotlist(items)))


def copy_project(destination: Path) -> Path:
    """conf (without conf/local), src and pyproject.toml of this project, and an empty data/."""
    if destination.exists():
        shutil.rmtree(destination)
    ignore = shutil.ignore_patterns("local", "__pycache__", "*.egg-info")
    shutil.copytree(PROJECT / "conf", destination / "conf", ignore=ignore)
    (destination / "conf" / "local").mkdir()
    shutil.copytree(PROJECT / "src", destination / "src", ignore=ignore)
    shutil.copy(PROJECT / "pyproject.toml", destination)
    return destination


def kedro_run(run: ChainRun, threads: int) -> ChainRun:
    """``kedro run [--pipeline P] [--from-nodes N]`` in ``run.folder`` with ``threads``
    threads for torch, OpenMP and BLAS, its parameters in the environment ``conf/study``
    (``--params`` cannot hold lists); its log goes to ``<folder>/<pipeline>.log``."""
    command = [sys.executable, "-m", "kedro", "run"]
    if run.pipeline:
        command += ["--pipeline", run.pipeline]
    if run.from_nodes:
        command += ["--from-nodes", run.from_nodes]
    if run.params:
        (run.folder / "conf" / "study").mkdir(exist_ok=True)
        OmegaConf.save(OmegaConf.create(run.params), run.folder / "conf/study/parameters.yml")
        command += ["--env", "study"]
    environment = {
        **os.environ,
        "OMP_NUM_THREADS": str(threads),
        "MKL_NUM_THREADS": str(threads),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "MPLBACKEND": "Agg",
        "KEDRO_DISABLE_TELEMETRY": "true",
        "DO_NOT_TRACK": "1",
        "COLUMNS": "200",
        # The copy's own sources, even where mriclip is installed in editable mode from here.
        "PYTHONPATH": str(run.folder / "src"),
    }
    start = time.perf_counter()
    with open(run.folder / f"{run.pipeline or 'default'}.log", "w") as log:
        done = subprocess.run(command, cwd=run.folder, env=environment, stdout=log, stderr=log)
    run.seconds, run.returncode = time.perf_counter() - start, done.returncode
    status = "ok" if done.returncode == 0 else f"FAILED (exit {done.returncode}, see the log)"
    print(f"{run.name}: {status} in {run.seconds:.0f} s ({run.folder})", flush=True)
    return run


def finished(folder: Path) -> bool:
    """Whether a run in ``folder`` got as far as its zero-shot metrics."""
    return any((folder / "data/08_reporting/zero_shot_metrics.json").glob("*/*.json"))


def prepare(folder: Path, reuse: bool) -> Path:
    """``folder`` as it is when ``reuse`` and its run finished, else a fresh project copy."""
    return folder if reuse and finished(folder) else copy_project(folder)


def run_all(
    runs: Sequence[ChainRun], jobs: int, threads: int, reuse: bool = False
) -> list[ChainRun]:
    """Every run, ``jobs`` at a time; with ``reuse``, runs that finished before are read, not
    run again (their time is the one recorded then, if any)."""

    def one(run: ChainRun) -> ChainRun:
        record = run.folder / "seconds.txt"
        if reuse and finished(run.folder):
            run.returncode = 0
            run.seconds = float(record.read_text()) if record.exists() else None
            return run
        kedro_run(run, threads)
        record.write_text(f"{run.seconds:.1f}")
        return run

    with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
        return list(pool.map(one, runs))


def latest_output(folder: Path, relative: str) -> Path:
    """The newest version of a versioned catalog file (``data/.../name.ext/<version>/name.ext``)."""
    versions = sorted((folder / relative).glob("*/" + Path(relative).name))
    if not versions:
        raise FileNotFoundError(f"no version of {relative} under {folder}")
    return versions[-1]


def zero_shot_metrics(folder: Path) -> dict:
    return json.loads(latest_output(folder, "data/08_reporting/zero_shot_metrics.json").read_text())


def lookup(metrics: Mapping, path: str) -> tuple[float | None, list | None]:
    """The value at a dotted path and the interval beside it ((None, None) where absent)."""
    *parents, name = path.split(".")
    node = metrics
    for key in parents:
        node = node.get(key) if isinstance(node, Mapping) else None
    if not isinstance(node, Mapping):
        return None, None
    return node.get(name), node.get(f"{name}_ci")


def cell(value: float | None, interval: Sequence[float] | None = None) -> str:
    if value is None:
        return "—"
    if interval is None:
        return f"{value:.3f}"
    return f"{value:.3f} [{interval[0]:.2f}, {interval[1]:.2f}]"


def summary(metrics: Mapping, columns: Mapping[str, str]) -> dict[str, tuple]:
    return {name: lookup(metrics, path) for name, path in columns.items()}


def markdown_table(rows: Mapping[str, Mapping[str, tuple]], columns: Sequence[str]) -> str:
    """Rows of (value, interval) cells, then mean ± sd over the rows of each column."""
    lines = ["| run | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, row in rows.items():
        lines.append(f"| {name} | " + " | ".join(cell(*row[column]) for column in columns) + " |")
    if len(rows) > 1:
        spread = []
        for column in columns:
            values = [row[column][0] for row in rows.values() if row[column][0] is not None]
            spread.append(
                f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"
                if len(values) > 1
                else "—"
            )
        lines.append("| **mean ± sd** | " + " | ".join(spread) + " |")
    return "\n".join(lines)


def collect(runs: Sequence[ChainRun], work: Path) -> tuple[dict, dict]:
    """Headline and per-region rows of the runs that finished; every run's metrics, seconds and
    parameters go to ``<work>/results.json``."""
    rows, regions, results = {}, {}, {}
    for run in runs:
        if run.returncode != 0:
            continue
        metrics = zero_shot_metrics(run.folder)
        rows[run.name] = summary(metrics, HEADLINE)
        regions[run.name] = summary(metrics, PER_REGION)
        results[run.name] = {"seconds": run.seconds, "params": run.params, "metrics": metrics}
    (work / "results.json").write_text(json.dumps(results, indent=1, default=str))
    return rows, regions


def machine() -> str:
    """The machine as figures depend on it: AVX2 and AVX-512 kernels round differently."""
    import torch

    kernels = torch.backends.cpu.get_cpu_capability()
    return (
        f"{platform.machine()} ({kernels} kernels), {os.cpu_count()} cores, "
        f"Python {platform.python_version()}"
    )


def replace_section(marker: str, text: str, document: Path = DOCS) -> None:
    """Put ``text`` between ``<!-- marker:start -->`` and ``<!-- marker:end -->`` of the
    document (appended with its markers when absent)."""
    start, end = f"<!-- {marker}:start -->", f"<!-- {marker}:end -->"
    content = document.read_text() if document.exists() else ""
    block = f"{start}\n{text.strip()}\n{end}"
    if start in content and end in content:
        before, rest = content.split(start, 1)
        content = before + block + rest.split(end, 1)[1]
    else:
        content = content.rstrip() + "\n\n" + block + "\n"
    document.write_text(content)
