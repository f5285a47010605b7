"""Cost of gradient-exact embedding accumulation versus a plain training step.

Measures, side by side in one run, one training step (forward + backward, no optimiser) of a
small CLIP model (a tiny 3D encoder + the packaged MiniLM text encoder) in three settings:

- plain step, batch B (default 2): forward both towers, loss, one backward;
- accumulated step, N micro-batches of B (default 8 x 2, a contrastive batch of 16);
- plain step, batch N*B, for contrast (what accumulation avoids holding).

Time is measured in one subprocess where the settings take turns on the same model (so they
share the machine's conditions); memory in a fresh subprocess per setting.
Time: the fastest of several rounds of the step, divided by its number of samples; on CPU the
process's CPU time (user + system, all threads), which other processes sharing the cores do
not inflate; on CUDA wall time with synchronisation.
Memory: the step's peak memory above what was in use just before it (model, data and optimiser
state excluded; gradients included, since ``zero_grad()`` frees them between steps). On CUDA
that is ``torch.cuda.max_memory_allocated`` minus ``memory_allocated``; on CPU it is the
process's peak resident set size during the step (VmHWM, reset through
``/proc/self/clear_refs``) minus its resident size before, with glibc told to map every
allocation over 64 KiB separately so that freed tensors leave the resident set at once.

Targets: per-sample time of the accumulated step <= 1.4x the plain step's; its peak memory
<= 1.15x the plain step's at the same B.

    python benchmarks/accumulation.py [--encoder swin|resnet] [--side 32] [--threads 1]

Prints a table and a markdown snippet for docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

TIME_TARGET, MEMORY_TARGET = 1.4, 1.15
ENCODERS = {
    "swin": {"feature_size": 12, "window_size": 4},
    "resnet": {"filters": 8},
}
SENTENCES = [
    "There is a lesion in the frontal section.",
    "There are two lesions, in the cerebellar and the occipital sections.",
    "There is a lesion in the parietal section. Additionally, one in the temporal section.",
    "There is a lesion in the occipital section.",
]


def main() -> None:
    args = parse_args()
    settings = [
        (1, args.micro_batch_size),
        (args.micro_batches, args.micro_batch_size),
        (1, args.micro_batches * args.micro_batch_size),
    ]
    if args.child == "time":
        print(json.dumps(measure_time(args, settings)))
        return
    if args.child:
        print(json.dumps(measure_memory(args, settings[int(args.child)])))
        return
    timing = run_child(args, "time")
    results = [
        {**run_child(args, str(index)), "per_sample_ms": timing["per_sample_ms"][index]}
        for index in range(len(settings))
    ]
    report(args, results, timing["floor"])


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--encoder", choices=sorted(ENCODERS), default="swin")
    parser.add_argument("--side", type=int, default=32, help="patch side in voxels")
    parser.add_argument("--micro-batches", type=int, default=8, help="N")
    parser.add_argument("--micro-batch-size", type=int, default=2, help="B")
    parser.add_argument("--repeats", type=int, default=5, help="timed rounds")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.add_argument("--bf16", action="store_true", help="bf16 autocast (CUDA)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    return parser.parse_args()


def run_child(args: argparse.Namespace, child: str) -> dict:
    command = [sys.executable, __file__, "--child", child, "--encoder", args.encoder]
    command += ["--side", str(args.side), "--micro-batches", str(args.micro_batches)]
    command += ["--micro-batch-size", str(args.micro_batch_size), "--repeats", str(args.repeats)]
    command += ["--threads", str(args.threads), "--device", args.device]
    command += ["--bf16"] if args.bf16 else []
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
    if child != "time":
        # A fixed mmap threshold makes glibc return every freed tensor to the OS at once, so
        # the resident set tracks live memory (the default threshold adapts and keeps freed
        # memory). Timing runs without it: the extra page faults would slow every step.
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    what = "time, all settings" if child == "time" else f"memory, setting {child}"
    print(f"measuring {what} ...", file=sys.stderr, flush=True)
    completed = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    if completed.returncode:
        sys.exit(f"child {what} failed:\n{completed.stderr}")
    return json.loads(completed.stdout.strip().splitlines()[-1])


def build(args: argparse.Namespace, settings: list[tuple[int, int]]):
    """The model, a step function and each setting's micro-batches."""
    import torch

    from mriclip.models.clip import ClipModel
    from mriclip.models.encoders import build_image_encoder
    from mriclip.text.encoder import TextEncoder
    from mriclip.training.accumulation import accumulated_step

    torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    torch.manual_seed(0)
    image_encoder = build_image_encoder(args.encoder, **ENCODERS[args.encoder])
    model = ClipModel(image_encoder, TextEncoder(), embed_dim=512).to(device).train()
    side = args.side
    batches = []
    for n, b in settings:
        text = model.text_encoder.tokenize([SENTENCES[i % len(SENTENCES)] for i in range(b)])
        batches.append([{"image": torch.randn(b, 1, side, side, side), **text} for _ in range(n)])
    dtype = torch.bfloat16 if args.bf16 else None

    def step(micro_batches) -> None:
        model.zero_grad(set_to_none=True)  # as optimizer.zero_grad() does between steps
        if len(micro_batches) > 1:
            accumulated_step(model, micro_batches, autocast_dtype=dtype)
        else:  # the plain step one would write without accumulation
            (batch,) = micro_batches
            inputs = (batch[k].to(device) for k in ("image", "input_ids", "attention_mask"))
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                image_emb, text_emb = model(*inputs)
            model.contrastive_loss(image_emb.float(), text_emb.float()).backward()
        if device.type == "cuda":
            torch.cuda.synchronize()

    return model, device, step, batches


def measure_time(args: argparse.Namespace, settings: list[tuple[int, int]]) -> dict:
    """Per-sample step time of every setting; the settings take turns on one model so that
    they share the machine's conditions, and each one's fastest round counts. Also the floor
    of the algorithm: 1 + (N - 1) / N * (no-grad forward) / (forward + backward)."""
    import torch

    model, device, step, batches = build(args, settings)
    n_micro = max(n for n, _ in settings)
    for micro_batches in batches:
        step(micro_batches)  # warm-up: kernels, allocator pools, lazily created state
    # CPU time of this process is robust to other processes sharing the cores; on CUDA the
    # wall time (with synchronisation) is what counts.
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    # Every timed block processes the same number of samples (N*B; a plain step of B runs N
    # times), so short steps do not get more chances at a quiet moment of a shared machine.
    block_samples = max(n * b for n, b in settings)
    times = [[] for _ in settings]
    no_grad_forward = []
    (plain_batch,) = batches[0]
    for _ in range(args.repeats):
        for index, ((n, b), micro_batches) in enumerate(zip(settings, batches, strict=True)):
            start = clock()
            for _ in range(block_samples // (n * b)):
                step(micro_batches)
            times[index].append((clock() - start) / (block_samples // (n * b)))
        plain_steps = block_samples // len(plain_batch["image"])
        start = clock()
        with torch.no_grad():
            for _ in range(plain_steps):
                model(
                    *(plain_batch[k].to(device) for k in ("image", "input_ids", "attention_mask"))
                )
        if device.type == "cuda":
            torch.cuda.synchronize()
        no_grad_forward.append((clock() - start) / plain_steps)
    return {
        "per_sample_ms": [
            1000 * min(rounds) / (n * b) for rounds, (n, b) in zip(times, settings, strict=True)
        ],
        # The last micro-batch is forwarded once, the other N - 1 twice.
        "floor": 1 + (n_micro - 1) / n_micro * min(no_grad_forward) / min(times[0]),
    }


def measure_memory(args: argparse.Namespace, setting: tuple[int, int]) -> dict:
    import torch

    model, device, step, (micro_batches,) = build(args, [setting])
    step(micro_batches)  # warm-up
    model.zero_grad(set_to_none=True)
    n, b = setting
    return {
        "n": n,
        "b": b,
        "samples": n * b,
        "peak_mib": peak_step_memory_mib(lambda: step(micro_batches), device),
        "largest_grad_mib": max(p.numel() * p.element_size() for p in model.parameters()) / 2**20,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }


def peak_step_memory_mib(step, device) -> float:
    import torch

    if device.type == "cuda":
        torch.cuda.empty_cache()
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        step()
        return (torch.cuda.max_memory_allocated(device) - before) / 2**20
    gc.collect()
    Path("/proc/self/clear_refs").write_text("5")  # resets the peak RSS (VmHWM)
    before = proc_status_kib("VmRSS")
    step()
    return (proc_status_kib("VmHWM") - before) / 1024


def proc_status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status (Linux only)")


def report(args: argparse.Namespace, results: list[dict], floor: float) -> None:
    plain, accumulated, big = results
    time_ratio = accumulated["per_sample_ms"] / plain["per_sample_ms"]
    memory_ratio = accumulated["peak_mib"] / plain["peak_mib"]
    big_ratio = big["peak_mib"] / plain["peak_mib"]
    rows = [
        (f"plain, B={plain['b']}", plain, 1.0, 1.0),
        (
            f"accumulated, N={accumulated['n']} x B={accumulated['b']}",
            accumulated,
            time_ratio,
            memory_ratio,
        ),
        (f"plain, B={big['b']}", big, big["per_sample_ms"] / plain["per_sample_ms"], big_ratio),
    ]
    header = (
        "| step | contrastive batch | per-sample time (ms) | x plain | peak step memory (MiB) "
        "| x plain |"
    )
    lines = [header, "|---|---|---|---|---|---|"]
    for label, result, t_ratio, m_ratio in rows:
        lines.append(
            f"| {label} | {result['samples']} | {result['per_sample_ms']:.1f} | {t_ratio:.2f} "
            f"| {result['peak_mib']:.1f} | {m_ratio:.2f} |"
        )
    verdict = (
        f"Accumulated / plain per-sample time {time_ratio:.2f} (target <= {TIME_TARGET}: "
        f"{'met' if time_ratio <= TIME_TARGET else 'NOT met'}); peak memory {memory_ratio:.2f} "
        f"(target <= {MEMORY_TARGET}: {'met' if memory_ratio <= MEMORY_TARGET else 'NOT met'})."
    )
    note = (
        "Time floor of the algorithm (N - 1 of N micro-batches forwarded twice, one backward): "
        f"1 + (N - 1) / N * no-grad forward / (forward + backward) = {floor:.2f} for this model "
        "and device. "
        f"Accumulated minus plain peak: {accumulated['peak_mib'] - plain['peak_mib']:.1f} MiB, "
        "the net of two effects: the re-forward holds one tower's activations at a time (less), "
        "and from the second micro-batch on each backward pass creates a fresh gradient that is "
        "added into .grad, so the largest parameter's gradient "
        f"({accumulated['largest_grad_mib']:.1f} MiB here, the text word embeddings) briefly "
        "exists twice (more, a fixed amount that does not grow with B or the patch size)."
    )
    setup = (
        f"{args.encoder} encoder {ENCODERS[args.encoder]} on {args.side}³ patches + packaged "
        f"MiniLM text encoder, 512-d residual heads; device {plain['device']}"
        f"{', bf16 autocast' if args.bf16 else ''}; {args.threads} CPU thread(s); "
        f"time is {'wall' if plain['device'] != 'cpu' else 'process CPU'} time, best of "
        f"{args.repeats} rounds of {plain['samples'] * args.micro_batches} samples; "
        "memory is the step's peak above the memory in use before it; "
        f"{platform.processor() or platform.machine()}."
    )
    print("\n".join(lines))
    print(verdict)
    print(note)
    print("\n<!-- markdown for docs/benchmarks.md -->")
    print("### Embedding accumulation cost\n")
    print(setup + "\n")
    print("\n".join(lines) + "\n")
    print(verdict)
    print(note)


if __name__ == "__main__":
    main()
