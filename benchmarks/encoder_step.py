"""Encoder step: forward and backward of the image encoder on one alignment micro-batch, for
the default encoder (conf/base/globals.yml) beside variants, measured side by side.

Every variant gets the same input (``--batch`` cubes of ``--patch``³ voxels with the default's
channels, channels-last as alignment trains; the default also in the contiguous layout), and
their repetitions are interleaved, so a slower stretch of the machine costs each the same.
Prints the median milliseconds per step and the ratio to the default.

    OMP_NUM_THREADS=1 python benchmarks/encoder_step.py [--batch 16] [--patch 16] [--reps 5]
        [--variant first_stride=2,filters=16,levels=3 ...]
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from chain_study import machine, merged
from omegaconf import OmegaConf

from mriclip.models.encoders import build_image_encoder

GLOBALS = Path(__file__).resolve().parents[1] / "conf" / "base" / "globals.yml"


def step_ms(encoder: torch.nn.Module, x: torch.Tensor, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        encoder(x).sum().backward()
    return (time.perf_counter() - start) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--patch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=20, help="steps per repetition")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument(
        "--variant", action="append", default=None,
        help="keyword overrides of the default encoder (default: conf/fast's strided first level)",
    )  # fmt: skip
    args = parser.parse_args()

    default = OmegaConf.to_container(OmegaConf.load(GLOBALS).image_encoder)
    variants = {"default": default["kwargs"]}
    for text in args.variant or ["first_stride=2,filters=16,levels=3"]:
        variants[text] = merged(default["kwargs"], text)
    torch.manual_seed(0)
    encoders = {"default, contiguous": build_image_encoder(default["name"], **default["kwargs"])}
    for name, kwargs in variants.items():
        encoder = build_image_encoder(default["name"], **kwargs)
        encoders[name] = encoder.to(memory_format=torch.channels_last_3d)
    channels = encoders["default"].input_channels
    x = torch.randn(args.batch, channels, *[args.patch] * 3)
    inputs = {name: x.to(memory_format=torch.channels_last_3d) for name in variants}
    inputs["default, contiguous"] = x
    times: dict[str, list[float]] = {name: [] for name in encoders}
    for name, encoder in encoders.items():
        step_ms(encoder.train(), inputs[name], 3)  # warm-up: oneDNN picks its kernels
    for _ in range(args.reps):
        for name, encoder in encoders.items():
            times[name].append(step_ms(encoder, inputs[name], args.steps))

    print(f"{machine()}, {torch.get_num_threads()} thread(s); encoder {default['name']} "
          f"{default['kwargs']}; batch {args.batch} x {channels} x {args.patch}^3")  # fmt: skip
    print("| encoder | parameters | ms per step (median of reps) | against default |")
    print("|---|---|---|---|")
    base = statistics.median(times["default"])
    for name, encoder in encoders.items():
        ms = statistics.median(times[name])
        parameters = sum(p.numel() for p in encoder.parameters())
        print(f"| {name} | {parameters:,} | {ms:.1f} | {ms / base:.2f}x |")


if __name__ == "__main__":
    main()
