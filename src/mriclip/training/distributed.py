"""Multi-process training with ``torch.distributed``: the ``*.training.distributed``
parameters, the launch of the workers through PyTorch's elastic launcher (what ``torchrun``
runs) and the collectives the training loop needs.

One Kedro node is the launcher: with ``nproc_per_node * nnodes > 1`` it starts
``nproc_per_node`` worker processes on its machine (``spawn``: whatever it sends them is
pickled), which meet the other nodes' workers at ``rdzv_endpoint``. Only global rank 0 sends
its result back to its node, which saves the catalog outputs; the other nodes end their run
once training is done (:class:`NotRankZero`).
"""

from __future__ import annotations

import logging
import os
import pickle
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields

import torch
import torch.distributed as dist
from torch.distributed.launcher.api import LaunchConfig, elastic_launch
from torch.distributed.nn.functional import all_gather

logger = logging.getLogger(__name__)

BACKENDS = ("nccl", "gloo")


@dataclass(frozen=True)
class DistributedConfig:
    """A pipeline's ``training.distributed`` parameters (conf/base has them all)."""

    nproc_per_node: int  # worker processes on this machine (1 GPU each on CUDA)
    nnodes: int  # machines taking part
    node_rank: int  # this machine's place among them, 0 to nnodes - 1; node 0 saves
    rdzv_endpoint: str | None  # host:port of node 0; null: this machine alone, any free port
    backend: str | None  # nccl | gloo | auto (null too): nccl on CUDA, gloo on the CPU
    max_restarts: int  # times a failed worker group is restarted (with resume: from last.pt)

    def __post_init__(self) -> None:
        for name in ("nproc_per_node", "nnodes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not 0 <= self.node_rank < self.nnodes:
            raise ValueError(
                f"node_rank must be in [0, nnodes - 1] = [0, {self.nnodes - 1}], "
                f"got {self.node_rank}"
            )
        if self.rdzv_endpoint is not None and not _is_endpoint(self.rdzv_endpoint):
            raise ValueError(f"rdzv_endpoint must be 'host:port', got {self.rdzv_endpoint!r}")
        if self.nnodes > 1 and self.rdzv_endpoint is None:
            raise ValueError(
                f"rdzv_endpoint (host:port of node 0) is needed with nnodes={self.nnodes}"
            )
        if self.backend not in (None, "auto", *BACKENDS):
            raise ValueError(
                f"backend must be one of {list(BACKENDS)}, 'auto' or null, got {self.backend!r}"
            )
        if self.max_restarts < 0:
            raise ValueError(f"max_restarts must be >= 0, got {self.max_restarts}")

    @classmethod
    def from_params(cls, params: Mapping) -> DistributedConfig:
        names = {field.name for field in fields(cls)}
        unknown, missing = set(params) - names, names - set(params)
        if unknown or missing:
            raise ValueError(f"unknown key(s) {sorted(unknown)}, missing key(s) {sorted(missing)}")
        return cls(**params)

    @property
    def world_size(self) -> int:
        return self.nproc_per_node * self.nnodes

    def process_backend(self, device: torch.device) -> str:
        if self.backend in (None, "auto"):
            return "nccl" if device.type == "cuda" else "gloo"
        return self.backend

    def launch_config(self) -> LaunchConfig:
        if self.rdzv_endpoint is None:  # one machine: torchrun --standalone's rendezvous
            rendezvous = {"rdzv_backend": "c10d", "rdzv_endpoint": "localhost:0"}
        else:  # torchrun's default: node ranks as given, global rank 0 on node 0
            rendezvous = {
                "rdzv_backend": "static",
                "rdzv_endpoint": self.rdzv_endpoint,
                "rdzv_configs": {"rank": self.node_rank},
            }
        return LaunchConfig(
            min_nodes=self.nnodes,
            max_nodes=self.nnodes,
            nproc_per_node=self.nproc_per_node,
            run_id=str(uuid.uuid4()),
            max_restarts=self.max_restarts,
            start_method="spawn",
            **rendezvous,
        )


def _is_endpoint(text: str) -> bool:
    host, _, port = text.rpartition(":")
    return bool(host) and port.isdigit()


class NotRankZero(SystemExit):
    """Ends the Kedro run of a node that hosts no global rank 0: its workers have trained,
    and node 0 saves the outputs (a run that saved them too would race it for the files)."""

    def __init__(self, node_rank: int) -> None:
        super().__init__(0)
        self.node_rank = node_rank


def launch(
    config: DistributedConfig, backend: str, entrypoint: Callable, /, **arguments: object
) -> object:
    """Run ``entrypoint(**arguments)`` in ``config.nproc_per_node`` processes of a
    ``config.world_size`` process group on ``backend``; returns what global rank 0 returned.

    The arguments are pickled to reach the workers, each its own copy; one that cannot be is
    named here rather than deep in the launcher. On a node without rank 0 this raises
    :class:`NotRankZero`."""
    # Pickled here, not by the launcher: torch.multiprocessing's pickler sends a CPU tensor as
    # shared memory, so every worker (and this process) would train one and the same
    # parameters, each rank's optimiser step landing on the others' (twice the step, racing).
    # A plain pickle gives each worker its own copy, as torchrun's processes have.
    pickled = {}
    for name, value in arguments.items():
        try:
            pickled[name] = pickle.dumps(value)
        except Exception as error:
            raise TypeError(
                f"{name} cannot be sent to the distributed training workers (they get it "
                f"pickled): {error}. Train in one process (distributed.nproc_per_node: 1, "
                "nnodes: 1)"
            ) from error
    logger.info(
        "launching %d worker process(es) on node %d of %d (%s)",
        config.nproc_per_node,
        config.node_rank,
        config.nnodes,
        backend,
    )
    returned = elastic_launch(config.launch_config(), _worker)(backend, entrypoint, pickled)
    results = [result for result in returned.values() if result is not None]
    if not results:
        logger.info("node %d: training done; node 0 saves the outputs", config.node_rank)
        raise NotRankZero(config.node_rank)
    return results[0]


def _worker(backend: str, entrypoint: Callable, pickled: dict[str, bytes]) -> object:
    """One worker process: join the process group, run ``entrypoint`` on its own copy of the
    arguments, return the result on rank 0 only."""
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    arguments = {name: pickle.loads(value) for name, value in pickled.items()}
    dist.init_process_group(backend)
    try:
        result = entrypoint(**arguments)
        return result if dist.get_rank() == 0 else None
    finally:
        dist.destroy_process_group()


def rank() -> int:
    """This process's global rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """Processes in the process group (1 outside one)."""
    return dist.get_world_size() if dist.is_initialized() else 1


def local_device(device: torch.device) -> torch.device:
    """A worker's own GPU (``LOCAL_RANK``) when training on CUDA; ``device`` otherwise."""
    if device.type == "cuda" and dist.is_initialized():
        return torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    return device


def gather_with_grad(tensor: torch.Tensor) -> torch.Tensor:
    """Every rank's ``tensor`` concatenated along dim 0, in rank order. Differentiable: the
    gradient reaching a rank's slice is the sum of what every rank's loss gives it."""
    if not dist.is_initialized():
        return tensor
    return torch.cat(all_gather(tensor))


def gather_objects(value: object) -> list:
    """Every rank's ``value`` (picklable), in rank order."""
    if not dist.is_initialized():
        return [value]
    gathered = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, value)
    return gathered


def mean_over_ranks(value: float, device: torch.device) -> float:
    if not dist.is_initialized():
        return value
    total = torch.tensor(value, dtype=torch.float64, device=device)
    dist.all_reduce(total)
    return float(total) / dist.get_world_size()
