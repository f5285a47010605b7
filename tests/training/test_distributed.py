"""DDP on the CPU (gloo, 2 processes, launched as the nodes launch them): the accumulated
step's gradient is the single-process one over both ranks' micro-batches, the batch stream is
sharded, and a resumed 2-process run is the uninterrupted one."""

from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch
import torch.distributed as dist
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.nn.parallel import DistributedDataParallel

from mriclip.training.accumulation import ExtraTerm, accumulated_step
from mriclip.training.alignment import AlignmentModules, train_alignment
from mriclip.training.batching import BatchStream
from mriclip.training.distributed import DistributedConfig, launch
from mriclip.training.engine import configs_from_params
from mriclip.training.methods import presence_term
from mriclip.training.pretraining import PretrainingConfig
from mriclip.training.samples import AlignmentSamples
from tests.conftest import crashing_in_epoch, training_params
from tests.training import test_accumulation, test_alignment_loop

WORLD, N_PER_RANK, VOCAB = 2, 2, test_accumulation.VOCAB


def two_processes(**changes) -> DistributedConfig:
    params = training_params("alignment")["distributed"]
    return DistributedConfig.from_params({**params, "nproc_per_node": WORLD, **changes})


def rank_micro_batches(with_keys: bool) -> list[list[dict]]:
    """Each rank's N_PER_RANK micro-batches (of 2), with sentences of different lengths."""
    generator = torch.Generator().manual_seed(5)
    ranks = []
    for rank in range(WORLD):
        batches = []
        for index in range(N_PER_RANK):
            length = 4 + 2 * index + rank
            input_ids = torch.randint(1, VOCAB, (2, length), generator=generator)
            attention_mask = torch.ones_like(input_ids)
            attention_mask[0, length - 2 :] = 0
            batch = {
                "image": torch.randn(2, 1, 8, 8, 8, generator=generator).double(),
                "input_ids": input_ids,
                "attention_mask": attention_mask,
            }
            if with_keys:  # keys shared across ranks: positives on the other rank too
                batch["key"] = [f"sentence {rank}", f"sentence {index}"]
            batches.append(batch)
        ranks.append(batches)
    return ranks


class SpreadTerm:
    """An extra loss term, picklable for the workers: the spread of a head's outputs over
    every sample of the step, which couples the samples as SLIP's SimCLR term does, plus
    their size (the spread alone would leave the head's bias without gradient)."""

    def __init__(self, model, head) -> None:
        self.model, self.head = model, head

    def encode(self, batch, device):
        return self.head(self.model.encode_image(batch["image"].to(device)))

    def loss(self, outputs):
        return outputs.var(dim=0).sum() + outputs.pow(2).mean()


def gradients_after_one_step(cases: list[tuple]) -> list[dict]:
    """In a worker: this rank's accumulated step through DDP, for each (model, batches, heads,
    extra terms)."""
    rank, out = dist.get_rank(), []
    for model, ranks, heads, terms in cases:
        modules = AlignmentModules({"clip": model, **heads})
        accumulated_step(
            model, ranks[rank], extra_terms=terms, replica=DistributedDataParallel(modules)
        )
        out.append(
            {name: p.grad.clone() for name, p in modules.named_parameters() if p.requires_grad}
        )
    return out


def test_ddp_accumulated_gradient_equals_single_process_over_both_ranks():
    cases = []
    for loss, with_keys, extra in [
        ("clip", False, None),
        ("siglip", True, None),
        ("clip", True, None),
        ("siglip", True, "spread"),
        ("siglip", True, "presence"),
    ]:
        model = test_accumulation.tiny_model(norm="instance", dropout=0.0, loss=loss)
        ranks = rank_micro_batches(with_keys)
        heads, terms = {}, None
        if extra == "spread":
            width = model.encode_image(ranks[0][0]["image"]).shape[-1]
            heads = {"spread_head": torch.nn.Linear(width, 3).double()}
            term = SpreadTerm(model, heads["spread_head"])
            terms = {"spread": ExtraTerm(term.encode, term.loss)}
        if extra == "presence":  # heads on the embeddings and on the features, one forward
            ranks = [[{**batch, "lesion": torch.tensor([1.0, 0.0])} for batch in batches]
                     for batches in ranks]  # fmt: skip
            widths = {"embeddings": model.embed_dim, "features": model.image_encoder.feature_dim}
            heads = {f"{reads}_head": torch.nn.Linear(width, 1).double()
                     for reads, width in widths.items()}  # fmt: skip
            terms = {reads: presence_term(heads[f"{reads}_head"], 0.7, reads) for reads in widths}
        cases.append((model, ranks, heads, terms))
    distributed = launch(two_processes(), "gloo", gradients_after_one_step, cases=cases)

    for case, grads in zip(cases, distributed, strict=True):
        model, ranks, heads, terms = copy.deepcopy(case)  # one copy: the terms share its modules
        reference = AlignmentModules({"clip": model, **heads})
        accumulated_step(
            model, [batch for batches in ranks for batch in batches], extra_terms=terms
        )
        names = {name for name, p in reference.named_parameters() if p.grad is not None}
        assert names == set(grads) and "clip.log_logit_scale" in names
        assert all(f"{name}.weight" in names for name in heads)
        for name, param in reference.named_parameters():
            scale = param.grad.abs().max().clamp_min(1e-12)
            difference = ((grads[name] - param.grad).abs().max() / scale).item()
            assert difference <= 1e-6, (name, difference)


def test_batch_stream_shards_are_disjoint_and_the_single_process_batches():
    single = BatchStream(10, 4, seed=3)
    shards = [BatchStream(10, 2, seed=3, rank=rank, world_size=2) for rank in range(2)]
    for number in range(5):  # 2 batches an epoch: crosses epochs
        together = shards[0].batch(number) + shards[1].batch(number)
        assert together == single.batch(number)
        assert not set(shards[0].batch(number)) & set(shards[1].batch(number))
    # 12 items a step from 10 scans: every scan drawn twice an epoch, still disjoint keys
    small = [BatchStream(10, 6, seed=0, rank=rank, world_size=2) for rank in range(2)]
    assert small[0].draws == 2
    together = small[0].batch(0) + small[1].batch(0)
    assert together == BatchStream(10, 12, seed=0).batch(0) and len(set(together)) == 12


def test_distributed_parameters_are_checked_and_named():
    params = training_params("pretraining")
    for change, message in [
        ({"nproc_per_node": 0}, "nproc_per_node must be >= 1"),
        ({"nnodes": 2, "rdzv_endpoint": None}, "rdzv_endpoint"),
        ({"nnodes": 2, "node_rank": 2, "rdzv_endpoint": "n0:29500"}, r"node_rank must be in"),
        ({"rdzv_endpoint": "node0"}, "'host:port'"),
        ({"backend": "mpi"}, "backend must be one of"),
        ({"unknown": 1}, r"unknown key\(s\) \['unknown'\]"),
    ]:
        wrong = {**params, "distributed": {**params["distributed"], **change}}
        with pytest.raises(ValueError, match=f"pretraining.training.distributed: .*{message}"):
            configs_from_params(wrong, PretrainingConfig, 0, "pretraining.training")
    config = two_processes(backend="auto")
    assert config.process_backend(torch.device("cpu")) == "gloo"
    assert config.process_backend(torch.device("cuda")) == "nccl"


def test_what_cannot_be_pickled_is_named_before_launching():
    with pytest.raises(TypeError, match="on_validation cannot be sent"):
        launch(two_processes(), "gloo", print, on_validation=lambda row: None)


def bump_on_rank_one(model: torch.nn.Linear) -> torch.Tensor:
    """In a worker: rank 1 changes its weights in place; rank 0 returns what it then holds."""
    dist.barrier()
    if dist.get_rank() == 1:
        with torch.no_grad():
            model.weight.add_(1.0)
    dist.barrier()
    return model.weight.detach().clone()


def test_each_worker_trains_its_own_copy_of_the_arguments():
    """Not one shared copy (torch.multiprocessing sends tensors as shared memory): there, one
    rank's optimiser step lands on the other ranks' parameters too."""
    model = torch.nn.Linear(3, 2)
    before = model.weight.detach().clone()
    rank_zero = launch(two_processes(), "gloo", bump_on_rank_one, model=model)
    assert torch.equal(rank_zero, before)
    assert torch.equal(model.weight, before)  # nor this process's


class CrashingSamples(crashing_in_epoch(AlignmentSamples)):
    """At module level: the workers get the dataset pickled."""


def test_resume_under_ddp_reproduces_an_uninterrupted_run(tmp_path, monkeypatch):
    """4 steps in 2 processes (each accumulating 2 micro-batches, dropout on), against a run
    that crashes in step 3 (one epoch a step) and is resumed from step 2: the same losses,
    validation rows and weights, bit for bit."""
    # The workers hash strings alike from run to run, as under a node (seed_everything).
    monkeypatch.setenv("PYTHONHASHSEED", "0")
    ddp = {**training_params("alignment")["distributed"], "nproc_per_node": WORLD}
    val_set = test_alignment_loop.samples(seed=1, n=4)

    def run(folder, train_set, **changes):
        training, config, method = test_alignment_loop.config(
            tmp_path / folder, distributed=ddp, **changes
        )
        model = test_alignment_loop.tiny_model()
        return train_alignment(model, train_set, val_set, training, config, method)

    model, history = run("straight", test_alignment_loop.samples())
    crashing = test_alignment_loop.samples(kind=CrashingSamples, crash_epoch=2)
    with pytest.raises(ChildFailedError, match="simulated crash|_worker"):
        run("stopped", crashing)
    resumed, resumed_history = run("stopped", test_alignment_loop.samples(), resume=True)

    assert resumed_history["step"].tolist() == [1, 2, 3, 4]
    assert history["val_loss"].notna().sum() == 2  # rank 0 validated at steps 2 and 4
    learnt = ["loss", "val_loss", "logit_scale", "lr_vision", "lr_heads"]
    pd.testing.assert_frame_equal(resumed_history[learnt], history[learnt], check_exact=True)
    for (name, a), b in zip(model.state_dict().items(), resumed.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
