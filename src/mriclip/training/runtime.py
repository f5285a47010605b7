"""Device choice, seeding and compilation shared by every training loop."""

import logging
import os
import platform
import random
import warnings
from importlib import metadata

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)


def pick_device(requested: str = "auto") -> torch.device:
    """`auto` picks CUDA, then Apple MPS, then CPU; any torch device string is honoured."""
    if requested != "auto":
        device = torch.device(requested)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device={requested!r} was requested but CUDA is not available")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def describe_device(requested: str = "auto") -> str:
    device = pick_device(requested)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"{device.type} ({torch.get_num_threads()} threads)"


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices) so runs repeat."""
    os.environ.setdefault("PYTHONHASHSEED", str(seed))
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def autocast_dtype(
    device: torch.device, mixed_precision: bool, mixed_precision_cpu: bool = False
) -> torch.dtype | None:
    """bf16 autocast on CUDA (``mixed_precision``) or on a CPU (``mixed_precision_cpu``) when
    asked and the device computes in bf16 natively; None means run in full precision."""
    if mixed_precision and device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    if mixed_precision_cpu and device.type == "cpu":
        if cpu_has_native_bf16():
            return torch.bfloat16
        # Emulated bf16 is slower than float32: the setting is meant for speed. A warning
        # (Kedro logs it) is shown once, where scoring asks again for every scan.
        warnings.warn(
            "mixed_precision_cpu: this CPU has no native bf16 (AVX512-BF16 or AMX), so the "
            "run stays in float32",
            RuntimeWarning,
            stacklevel=2,
        )
    return None


def cpu_has_native_bf16() -> bool:
    """Whether oneDNN runs bf16 natively here (AVX512-BF16 or AMX), as torch itself checks."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def compile_in_place(parts: dict[str, nn.Module], who: str) -> dict[str, nn.Module]:
    """``torch.compile`` each module of ``parts`` in place (``nn.Module.compile``): calling
    it runs the compiled code, while its state dict keeps its keys (a ``torch.compile``
    wrapper would prefix them with ``_orig_mod.``), so checkpoints and resume are unchanged.
    Returns ``parts``."""
    for module in parts.values():
        module.compile()
    logger.info(
        "%s: torch.compile of %s (the first steps are slow: they compile)", who, ", ".join(parts)
    )
    return parts


def uncompile(parts: dict[str, nn.Module]) -> None:
    """Undo :func:`compile_in_place`: the trained model goes on as a plain module, not
    recompiled for the CPU or for other input shapes. (A pickled module drops its compiled
    call too.)"""
    for module in parts.values():
        module._compiled_call_impl = None


#: Packages whose versions decide a run's numbers (kernels, resampling, registration).
_VERSIONED_PACKAGES = ("torch", "numpy", "scipy", "monai", "SimpleITK", "scikit-learn")
#: Thread counts, and the instruction sets the CPU kernels may use (set before the process
#: starts, they make a machine with AVX-512 compute as one with only AVX2).
_ENVIRONMENT_VARIABLES = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "ATEN_CPU_CAPABILITY",
    "ONEDNN_MAX_CPU_ISA",
    "OPENBLAS_CORETYPE",
)


def compute_environment() -> dict:
    """What a run's numbers depend on besides code, data and parameters: thread counts (torch,
    BLAS, OpenMP and ITK round differently with more threads), the CPU kernels chosen for the
    machine's instruction set (AVX2 and AVX-512 kernels round differently too), package
    versions and the machine. Stored with the metrics so that a figure can be reproduced, or a
    difference explained."""
    from threadpoolctl import threadpool_info

    pools = threadpool_info()
    environment = {
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "env": {name: os.environ.get(name) for name in _ENVIRONMENT_VARIABLES},
        "blas": sorted({f"{pool['internal_api']}:{pool['num_threads']}" for pool in pools}),
        "cpu_kernels": {
            "torch": torch.backends.cpu.get_cpu_capability(),
            **{
                pool["internal_api"]: pool["architecture"]
                for pool in pools
                if "architecture" in pool
            },
        },
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "versions": {name: _version(name) for name in _VERSIONED_PACKAGES},
    }
    try:
        import SimpleITK as sitk

        environment["itk_threads"] = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    except ImportError:
        pass
    return environment


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None
