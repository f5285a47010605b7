"""GPU speed (the GPU speed options): training samples/s and peak memory with and without
torch.compile, and data-loader samples/s against them; and the data side on this CPU.

On the preprocessed cohort in the catalog (``kedro run --pipeline demo_data`` and
``--pipeline data_engineering`` first; with ``--env gpu`` for the paper's 192³ grid), through
the library's own code: the alignment node's ``train_on_fold`` and datasets, the pretraining
node ``pretrain_encoder``, the engine's data loader.

Default mode, the ``conf/<env>`` settings (``--env gpu``: Swin-T; alignment 64³, B=8, N=16;
pretraining 128³, B=8), each run with ``compile`` false then true:

- model samples/s: the median over the steps after the first ``--skip`` (which compile) of
  samples / (step time - time waiting for batches), with 0 workers and augmentation off, so
  it is the model's rate alone; peak memory: ``torch.cuda.max_memory_allocated`` on CUDA,
  the process's peak RSS (VmHWM) on a CPU;
- data-loader samples/s for each ``--workers`` count, at the env's augmentation settings,
  and its ratio to the faster model rate (>= 1: the loader keeps up).

``--small`` shrinks everything (Swin of width 12, 32³ patches, B=2, N=2, a few steps) for a
smoke check on a CPU, with ``--no-compile`` there: on the project's loaded 2-core CPU one
torch.compile of even that Swin ran over 7 minutes (a tiny residual encoder: 30 s).

``--data-side`` measures what the issue asks of the CPU: (a) with the conf/base alignment
settings and 2 workers, the share of each step the loop waits for batches (the engine's
``data_wait_fraction``; 0 workers beside it); (b) data-loader samples/s for 0, 1 and 2
workers at the conf/gpu alignment augmentation settings (64³ items, on the catalog's grid).

    python benchmarks/gpu.py --env gpu [--steps 12] [--workers 0 1 2 4 8]
    python benchmarks/gpu.py --small --no-compile --steps 3 --workers 0 1 2 --batches 4
    python benchmarks/gpu.py --data-side [--steps 100]
"""

from __future__ import annotations

import argparse
import copy
import itertools
import platform
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project

from mriclip.models.encoders import build_image_encoder
from mriclip.pipelines.alignment.pipeline import FOLD_INPUTS

# The node's own dataset builder (the pretraining node's, private to it).
from mriclip.pipelines.pretraining.nodes import pretrain_encoder
from mriclip.splits import in_split
from mriclip.training.batching import BatchStream, batch_loader
from mriclip.training.pretraining import pretraining_samples
from mriclip.training.runtime import describe_device
from mriclip.tuning.cross_validation import (
    FoldInputs,
    alignment_samples,
    train_on_fold,
    training_and_validation_scans,
    with_lesion_maps,
)

SMALL_ENCODER = {"feature_size": 12}
SMALL = {
    "alignment": {"patch_size": 32, "training": {"micro_batch_size": 2, "accumulation_steps": 2}},
    "pretraining": {"patch_size": 32, "training": {"batch_size": 2}},
}


def load_catalog(env: str) -> tuple[dict, FoldInputs, dict]:
    """(parameters, the alignment fold inputs, the preprocessed volumes) of ``env``."""
    project = Path(__file__).resolve().parents[1]
    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env) as session:
        context = session.load_context()
        params, catalog = context.params, context.catalog
        loaded = {
            name: None if name == "pretrained_encoder" else catalog.load(entry)
            for name, entry in FOLD_INPUTS.items()
            if not entry.startswith("params:")
        }
    inputs = FoldInputs(**loaded, sentences=params["sentences"], regions=params["regions"])
    return params, inputs, inputs.preprocessed_volumes


def merged(base: dict, changes: dict) -> dict:
    result = copy.deepcopy(base)
    for key, value in changes.items():
        is_mapping = isinstance(value, dict) and isinstance(result.get(key), dict)
        result[key] = merged(result[key], value) if is_mapping else value
    return result


def no_augmentation(params: dict) -> dict:
    return {key: 0.0 if key.endswith("_prob") else v for key, v in params.items()}


def run_settings(params: dict, pipeline: str, steps: int, small: bool, **training) -> dict:
    """``params[pipeline]`` for a benchmark run: no validation, checkpoints or pretrained
    init; ``training`` changed; ``--small`` sizes."""
    changes = {
        "training": {
            "steps": steps,
            "warmup_steps": 1,
            "val_every": steps,
            "checkpoint_dir": None,
            "resume": False,
            **training,
        }
    }
    if pipeline == "alignment":
        changes.update(fold=None, image_init="random")
        changes["training"]["keep"] = "last"
    if small:
        encoder = "image_encoder" if pipeline == "alignment" else "encoder"
        changes = merged(SMALL[pipeline], changes)
        changes[encoder] = {"kwargs": SMALL_ENCODER}
    return merged(params[pipeline], changes)


class PeakMemory:
    """Peak memory of the block: CUDA's allocator peak, or this process's peak RSS."""

    def __enter__(self) -> PeakMemory:
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()
        else:
            Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM (Linux)
        return self

    def __exit__(self, *exc) -> None:
        if torch.cuda.is_available():
            self.gib = torch.cuda.max_memory_allocated() / 2**30
        else:
            status = Path("/proc/self/status").read_text().splitlines()
            (line,) = [line for line in status if line.startswith("VmHWM:")]
            self.gib = int(line.split()[1]) / 2**20


def train_history(pipeline: str, params: dict, settings: dict, inputs: FoldInputs) -> pd.DataFrame:
    seed = params["seed"]
    if pipeline == "alignment":
        return train_on_fold(inputs, settings, seed)[1]
    volumes, splits = inputs.preprocessed_volumes, inputs.splits
    return pretrain_encoder(volumes, {}, splits, settings, seed)[1]


def model_rate(history: pd.DataFrame, skip: int) -> float:
    """Samples/s of the model alone: the time waiting for batches taken out of each step."""
    steady = history.iloc[skip:]
    return statistics.median(steady["samples_per_s"] / (1 - steady["data_wait_fraction"]))


def training_set(pipeline: str, params: dict, settings: dict, inputs: FoldInputs):
    """The training dataset the pipeline's node builds (augmented per ``settings``)."""
    seed = params["seed"]
    if pipeline == "pretraining":
        encoder = build_image_encoder(settings["encoder"]["name"], **settings["encoder"]["kwargs"])
        ids = sorted(in_split(inputs.splits, "train")["scan_id"])
        volumes = inputs.preprocessed_volumes
        return pretraining_samples(volumes, ids, settings, seed, encoder.position_channels)
    encoder = settings["image_encoder"]
    position = build_image_encoder(encoder["name"], **encoder["kwargs"]).position_channels
    scans, _ = training_and_validation_scans(inputs.scan_sentences, inputs.splits, None)
    if settings["mode"] == "patch":
        scans = with_lesion_maps(scans, inputs.lesion_table, inputs.preprocessed_labels, "training")
    return alignment_samples(scans, inputs, settings, seed, True, position)


def loader_rate(dataset, batch_size: int, workers: int, batches: int, seed: int) -> float:
    """Samples/s the engine's data loader delivers, after its first batch (worker start)."""
    stream = BatchStream(len(dataset), batch_size, seed)
    iterator = iter(batch_loader(dataset, stream, workers, torch.cuda.is_available(), seed))
    next(iterator)
    start = time.perf_counter()
    for _ in itertools.islice(iterator, batches):
        pass
    rate = batches * batch_size / (time.perf_counter() - start)
    del iterator  # stops the workers
    return rate


def batch_size_of(settings: dict) -> int:
    training = settings["training"]
    return training.get("micro_batch_size") or training["batch_size"]


def speed_table(args: argparse.Namespace) -> None:
    params, inputs, volumes = load_catalog(args.env)
    grid = "x".join(map(str, next(iter(volumes.values()))().shape))
    print(f"device: {describe_device()}; env {args.env}; volumes {grid}; small={args.small}")
    print("\n| task | compile | model samples/s | peak memory (GiB) |\n|---|---|---|---|")
    model_rates = {}
    compile_modes = (False,) if args.no_compile else (False, True)
    for pipeline, compiled in itertools.product(("alignment", "pretraining"), compile_modes):
        settings = run_settings(
            params, pipeline, args.steps, args.small, compile=compiled, num_workers=0
        )
        settings["augmentation"] = no_augmentation(settings["augmentation"])
        with PeakMemory() as memory:
            history = train_history(pipeline, params, settings, inputs)
        rate = model_rate(history, args.skip)
        model_rates[pipeline] = max(rate, model_rates.get(pipeline, 0.0))
        print(f"| {pipeline} | {compiled} | {rate:.2f} | {memory.gib:.2f} |", flush=True)
    print("\n| task | data workers | loader samples/s | loader / model |\n|---|---|---|---|")
    for pipeline in ("alignment", "pretraining"):
        settings = run_settings(params, pipeline, args.steps, args.small)
        dataset = training_set(pipeline, params, settings, inputs)
        for workers in args.workers:
            rate = loader_rate(
                dataset, batch_size_of(settings), workers, args.batches, params["seed"]
            )
            ratio = rate / model_rates[pipeline]
            print(f"| {pipeline} | {workers} | {rate:.2f} | {ratio:.2f} |", flush=True)


def data_side(args: argparse.Namespace) -> None:
    params, inputs, volumes = load_catalog("base")
    grid = "x".join(map(str, next(iter(volumes.values()))().shape))
    print(f"device: {describe_device()}; {platform.processor() or platform.machine()}")
    print(f"(a) conf/base alignment, {args.steps} steps, volumes {grid}")
    print("\n| data workers | data wait, steps 2+ (mean) | first step | step time (median) |")
    print("|---|---|---|---|")
    for workers in (2, 0):
        settings = run_settings(params, "alignment", args.steps, False, num_workers=workers)
        history = train_on_fold(inputs, settings, params["seed"])[1]
        samples = batch_size_of(settings) * settings["training"]["accumulation_steps"]
        wait = history["data_wait_fraction"]
        step_ms = 1e3 * samples / history["samples_per_s"].iloc[1:].median()
        print(
            f"| {workers} | {100 * wait.iloc[1:].mean():.1f}% | {100 * wait.iloc[0]:.1f}% | "
            f"{step_ms:.0f} ms |",
            flush=True,
        )
    gpu_params = load_catalog("gpu")[0]
    settings = run_settings(gpu_params, "alignment", args.steps, False)
    dataset = training_set("alignment", gpu_params, settings, inputs)
    size = batch_size_of(settings)
    print(f"\n(b) conf/gpu alignment augmentation, {settings['patch_size']}³ items, B={size}")
    print("\n| data workers | loader samples/s |\n|---|---|")
    for workers in (0, 1, 2):
        rate = loader_rate(dataset, size, workers, args.batches, gpu_params["seed"])
        print(f"| {workers} | {rate:.2f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="gpu", help="Kedro environment of the speed table")
    parser.add_argument("--steps", type=int, default=12, help="training steps a run")
    parser.add_argument("--skip", type=int, default=2, help="first steps left out (compile)")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    parser.add_argument("--batches", type=int, default=16, help="batches a loader is timed on")
    parser.add_argument("--small", action="store_true", help="a CPU-sized smoke check")
    parser.add_argument("--no-compile", action="store_true", help="compile false only")
    parser.add_argument("--data-side", action="store_true", help="the CPU data-side figures")
    args = parser.parse_args()
    data_side(args) if args.data_side else speed_table(args)


if __name__ == "__main__":
    main()
