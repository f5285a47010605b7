"""Gradient-exact embedding accumulation (GradCache-style) for contrastive training.

A contrastive loss over N*B pairs needs every embedding at once, but activations for only B
samples fit in memory. :func:`accumulated_step` gets the gradient of the loss over all N*B
pairs while holding activations for one micro-batch of B:

1. forward every micro-batch but the last without autograd, recording the RNG state before
   each tower's forward, and keep only the embeddings; forward the last one with autograd;
2. compute the loss once on all N*B embeddings (as leaf tensors) and backpropagate it, which
   yields d loss / d embedding for every sample and the temperature's (and SigLIP bias's)
   gradient, each exactly once;
3. backpropagate the last micro-batch's slice of d loss / d embedding through its kept graph;
   re-forward each other micro-batch with autograd under its recorded RNG state, so dropout
   and any other randomness draw the same values as in step 1, and backpropagate its slice
   through it, one tower (image, then text) at a time.

By the chain rule the summed parameter gradients equal those of one backward pass through
the loss over all N*B pairs computed from these forwards. Module buffers (BatchNorm running
statistics and ``num_batches_tracked``) are restored after step 3, so they are updated once
per micro-batch, by step 1. Cost: (2N - 1) / N forwards and one backward per sample; peak
activations: those of one micro-batch, as in a plain step of B.

The paper's reference implementation and open_clip's ``accum_freq`` skip the RNG replay (so
with dropout the re-forward differs from the cached forward and encoder gradients are not
exact) and backpropagate the full loss once per micro-batch, giving the temperature N times its
gradient. The tests in ``tests/training/test_accumulation.py`` show both effects.

Extra loss terms (SLIP's SimCLR term, CoCa's captioning loss; :class:`ExtraTerm`) take part
like a third and fourth tower: their per-sample outputs are cached, the loss over all N*B
samples is computed once beside the contrastive one, and each micro-batch is re-forwarded
under its recorded RNG state, so their gradients are exact too. Each term runs its own forward
(after the towers', in a fixed order, as a plain step runs them), except one whose loss reads
the image tower's embeddings or its pooled features (the lesion-presence head): it adds no
forward, and its gradient reaches the image tower through the cached gradient of what it read
(the image tower then hands its features on beside its embeddings).

Gradients are accumulated into ``.grad`` (call ``optimizer.zero_grad()`` before, step after).

Under DDP (``replica``, the model's ``DistributedDataParallel`` wrapper) the loss sees every
rank's N*B embeddings, gathered with their gradient, so a step has world_size*N*B pairs. Every
rank computes the same loss, so the gather's backward (a sum over ranks) hands each rank
world_size times the gradient of its own embeddings, and DDP's mean over ranks brings it back:
the result is the single-process gradient over all ranks' micro-batches. The temperature (and
SigLIP bias) get the same, exact gradient on every rank, which the mean keeps. Gradients are
all-reduced once a step: the replays run under ``no_sync`` and the one synced backward is the
step's last, so there the last micro-batch is re-forwarded too (both towers, through the
wrapper) and the loss recomputed with its live embeddings, which also reach the temperature.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from mriclip.models.clip import ClipModel
from mriclip.models.losses import positive_mask_from_keys
from mriclip.training.distributed import gather_objects, gather_with_grad

__all__ = ["ExtraTerm", "LossFn", "MicroBatch", "accumulated_step"]

MicroBatch = Mapping[str, object]
"""``{"image": (B, 1, D, H, W), "input_ids": (B, L), "attention_mask": (B, L)}`` and optionally
``"key"``: B sentences or label sets for label-aware targets (see ``positive_mask_from_keys``)."""

# Order matters: it is the order ClipModel.forward runs them, so the random stream is consumed
# as in a plain forward.
TOWERS = ("image", "text")

#: What an extra term's loss may read of the image tower beside its own outputs.
READS = (None, "embeddings", "features")

LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]
"""``(image_emb, text_emb, positive_mask) -> scalar loss``; must use the model's temperature."""


@dataclass(frozen=True)
class ExtraTerm:
    """A loss term added to the contrastive one, computed over all N*B samples of the step.

    Args:
        encode: ``(micro_batch, device) -> (B, ...)`` per-sample outputs with autograd (e.g.
            the embeddings of two augmented views); randomness in it (dropout) is replayed.
        loss: the outputs of all N*B samples, concatenated, ``-> scalar``; with ``reads``,
            ``(outputs, image_output) -> scalar``. It must depend on a sample only through
            that sample's outputs (as the contrastive loss does on its embeddings).
        reads: ``"embeddings"`` or ``"features"``: the loss reads the image tower's normalised
            embeddings or its encoder's pooled features of the step's samples (a head on
            them), so the term runs no forward of its own: ``encode`` gives per-sample
            targets, which the loss must not differentiate and which are never re-forwarded.
            None: the term's ``encode`` runs its own forward.
    """

    encode: Callable[[MicroBatch, torch.device], torch.Tensor]
    loss: Callable[..., torch.Tensor]
    reads: str | None = None

    def __post_init__(self) -> None:
        if self.reads not in READS:
            raise ValueError(f"an extra term reads one of {READS}, got {self.reads!r}")


def accumulated_step(
    model: ClipModel,
    micro_batches: Sequence[MicroBatch],
    loss_fn: LossFn | None = None,
    autocast_dtype: torch.dtype | None = None,
    extra_terms: Mapping[str, ExtraTerm] | None = None,
    replica: torch.nn.Module | None = None,
) -> float:
    """Accumulate into ``.grad`` the gradient of the contrastive loss over all micro-batches.

    Args:
        model: the CLIP model (``encode_image`` and ``encode_text`` give normalised embeddings;
            they are called in that order, as ``ClipModel.forward`` does).
        micro_batches: N micro-batches; tensors are moved to the model's device. If every one
            has ``"key"`` the loss gets the positive mask of all N*B keys (label-aware
            targets); if none has, plain diagonal targets; a mix is an error.
        loss_fn: defaults to ``model.contrastive_loss``.
        autocast_dtype: e.g. ``torch.bfloat16`` to run the forwards under autocast on the
            model's device; the loss itself is computed in at least float32.
        extra_terms: named terms added to the loss, forwarded after the towers in this order.
        replica: the DistributedDataParallel wrapper of the module holding ``model`` (and
            the extra terms' heads) in a multi-process run, whose forward is ``model``'s (the
            loss then covers every rank's micro-batches); None or ``model`` in one process.

    Returns:
        The loss over all N*B pairs (world_size*N*B under DDP; extra terms included). With
        N = 1 in one process this is a plain forward and backward.
    """
    if not micro_batches:
        raise ValueError("accumulated_step needs at least one micro-batch")
    loss_fn = loss_fn or model.contrastive_loss
    extra_terms = dict(extra_terms or {})
    if set(extra_terms) & set(TOWERS):
        raise ValueError(f"extra loss terms cannot be named like a tower {TOWERS}")
    device = next(model.parameters()).device
    features = any(term.reads == "features" for term in extra_terms.values())

    def encode(tower: str, batch: MicroBatch) -> torch.Tensor:
        if tower in extra_terms:
            with torch.autocast(device.type, autocast_dtype, enabled=autocast_dtype is not None):
                return extra_terms[tower].encode(batch, device)
        return _encode(model, tower, batch, device, autocast_dtype, features)

    step = _Step(model, (*TOWERS, *extra_terms), encode, loss_fn, extra_terms, features)
    if isinstance(replica, DistributedDataParallel):
        return _distributed_step(step, replica, micro_batches, device, autocast_dtype)
    keys = _keys(micro_batches)
    positive_mask = None if keys is None else positive_mask_from_keys(keys, device=device)

    *replayed, last = micro_batches
    cache, rng_states = _first_pass(step, replayed, device)
    # The last micro-batch keeps its graph, so it needs no second forward (with N = 1 this is
    # a plain step). Its activations are alive only until its backward, as in a plain step.
    kept = {tower: encode(tower, last) for tower in step.towers}

    embeddings = {
        tower: _loss_precision(torch.cat([*cache[tower], kept[tower].detach()])).requires_grad_()
        for tower in step.towers
    }
    loss = step.loss(embeddings, positive_mask)
    loss.backward()
    sizes = [len(chunk) for chunk in cache["image"]] + [len(kept["image"])]
    # A loss that ignores a tower leaves it without gradient: that tower is not re-forwarded.
    grads = {
        tower: embeddings[tower].grad.split(sizes)
        for tower in step.towers
        if embeddings[tower].grad is not None
    }
    for tower in grads:
        kept[tower].backward(grads[tower][-1].to(kept[tower].dtype))
    del kept  # frees the graph of a tower the loss ignored before the re-forwards

    with _buffers_kept(model):
        _replay(step, replayed, rng_states, grads, device)
    return loss.item()


@dataclass(frozen=True)
class _Step:
    """What one accumulated step runs: the towers and extra terms, in order, and the loss."""

    model: ClipModel
    towers: tuple[str, ...]
    encode: Callable[[str, MicroBatch], torch.Tensor]
    loss_fn: LossFn
    extra_terms: Mapping[str, ExtraTerm]
    #: the image tower's output holds its pooled features after its embeddings (a term reads them)
    image_features: bool = False

    def loss(self, outputs: Mapping[str, torch.Tensor], positive_mask) -> torch.Tensor:
        image = {"embeddings": outputs["image"]}
        if self.image_features:
            image["embeddings"], image["features"] = outputs["image"].split(
                [self.model.embed_dim, outputs["image"].shape[1] - self.model.embed_dim], dim=1
            )
        loss = self.loss_fn(image["embeddings"], outputs["text"], positive_mask)
        for name, term in self.extra_terms.items():
            inputs = (outputs[name],) if term.reads is None else (outputs[name], image[term.reads])
            loss = loss + term.loss(*inputs)
        return loss


def _distributed_step(
    step: _Step,
    replica: DistributedDataParallel,
    micro_batches: Sequence[MicroBatch],
    device: torch.device,
    autocast_dtype: torch.dtype | None,
) -> float:
    """:func:`accumulated_step` under DDP (see the module's docstring)."""
    keys = _keys(micro_batches)
    positive_mask = None
    if keys is not None:
        every_rank = [key for rank_keys in gather_objects(keys) for key in rank_keys]
        positive_mask = positive_mask_from_keys(every_rank, device=device)
    cache, rng_states = _first_pass(step, micro_batches, device)
    local = {
        tower: _loss_precision(torch.cat(cache[tower])).requires_grad_() for tower in step.towers
    }
    loss = step.loss(
        {tower: gather_with_grad(local[tower]) for tower in step.towers}, positive_mask
    )
    tower_grads = torch.autograd.grad(
        loss, [local[tower] for tower in step.towers], allow_unused=True
    )
    sizes = [len(chunk) for chunk in cache["image"]]
    grads = {
        tower: grad.split(sizes)
        for tower, grad in zip(step.towers, tower_grads, strict=True)
        if grad is not None
    }
    *replayed, last = micro_batches
    with _buffers_kept(step.model):
        with replica.no_sync():
            _replay(step, replayed, rng_states, grads, device)
        # One forward of both towers through the wrapper, as ClipModel.forward runs them: the
        # image tower's recorded state is also where the text tower's draws began. The extra
        # terms follow under their own states; their heads' gradients join the same synced
        # backward.
        with (
            _replayed_rng(rng_states[-1]["image"], device),
            torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None),
        ):
            live = dict(
                zip(
                    TOWERS,
                    replica(
                        last["image"].to(device, non_blocking=True),
                        last["input_ids"].to(device, non_blocking=True),
                        last["attention_mask"].to(device, non_blocking=True),
                        image_features=step.image_features,
                    ),
                    strict=True,
                )
            )
        for name in step.extra_terms:
            with _replayed_rng(rng_states[-1][name], device):
                live[name] = step.encode(name, last)
        embeddings = {
            tower: gather_with_grad(_loss_precision(torch.cat([*cache[tower][:-1], live[tower]])))
            for tower in step.towers
        }
        loss = step.loss(embeddings, positive_mask)
        loss.backward()
    return loss.item()


def _first_pass(
    step: _Step, batches: Sequence[MicroBatch], device: torch.device
) -> tuple[dict[str, list[torch.Tensor]], list[dict[str, dict[str, torch.Tensor]]]]:
    """Each micro-batch's outputs without autograd, and the RNG state before each tower."""
    rng_states: list[dict[str, dict[str, torch.Tensor]]] = []
    cache: dict[str, list[torch.Tensor]] = {tower: [] for tower in step.towers}
    with torch.no_grad():
        for batch in batches:
            states = {}
            for tower in step.towers:
                states[tower] = _capture_rng(device)
                cache[tower].append(step.encode(tower, batch))
            rng_states.append(states)
    return cache, rng_states


def _replay(
    step: _Step,
    batches: Sequence[MicroBatch],
    rng_states: list[dict[str, dict[str, torch.Tensor]]],
    grads: dict[str, Sequence[torch.Tensor]],
    device: torch.device,
) -> None:
    """Re-forward each micro-batch under its recorded RNG state and backpropagate its slice
    of d loss / d output."""
    for index, batch in enumerate(batches):
        # The towers are independent given the cached gradients, so each is re-forwarded and
        # backpropagated on its own: only one tower's activations are alive at a time.
        for tower in grads:
            with _replayed_rng(rng_states[index][tower], device):
                embedding = step.encode(tower, batch)
            embedding.backward(grads[tower][index].to(embedding.dtype))


@contextmanager
def _buffers_kept(model: ClipModel) -> Iterator[None]:
    """Buffers as the block found them: the first pass updated them once per micro-batch."""
    saved = [(buffer, buffer.clone()) for buffer in model.buffers()]
    yield
    with torch.no_grad():
        for buffer, value in saved:
            buffer.copy_(value)


def _encode(
    model: ClipModel,
    tower: str,
    batch: MicroBatch,
    device: torch.device,
    autocast_dtype: torch.dtype | None,
    image_features: bool = False,
) -> torch.Tensor:
    """One tower's normalised embeddings, in the order ``ClipModel.forward`` runs them; with
    ``image_features``, the image tower's pooled features follow its embeddings on each row."""
    with torch.autocast(device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
        if tower == "image":
            image = batch["image"].to(device, non_blocking=True)
            return model.encode_image(image, with_features=image_features)
        return model.encode_text(
            batch["input_ids"].to(device, non_blocking=True),
            batch["attention_mask"].to(device, non_blocking=True),
        )


def _loss_precision(embeddings: torch.Tensor) -> torch.Tensor:
    # bf16 embeddings from autocast are promoted; float32/float64 ones are kept as they are.
    return embeddings.to(torch.promote_types(embeddings.dtype, torch.float32))


def _keys(micro_batches: Sequence[MicroBatch]) -> list | None:
    """Every sample's label-aware key, or None for plain targets."""
    with_keys = sum("key" in batch for batch in micro_batches)
    if with_keys == 0:
        return None
    if with_keys != len(micro_batches):
        raise ValueError(
            f"{with_keys} of {len(micro_batches)} micro-batches carry 'key'; label-aware targets "
            "need keys for every sample, plain targets for none"
        )
    return [key for batch in micro_batches for key in batch["key"]]


def _capture_rng(device: torch.device) -> dict[str, torch.Tensor]:
    """The CPU generator's state, plus the model's accelerator generator if it has one."""
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        # Only the model's own GPU: touching every visible GPU would create CUDA contexts on
        # devices that belong to other DDP ranks.
        state["cuda"] = torch.cuda.get_rng_state(device)
    elif device.type == "mps":
        state["mps"] = torch.mps.get_rng_state()
    return state


def _restore_rng(state: Mapping[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
    if "mps" in state:
        torch.mps.set_rng_state(state["mps"])


@contextmanager
def _replayed_rng(state: Mapping[str, torch.Tensor], device: torch.device) -> Iterator[None]:
    """Run the block with the generators set to ``state``, then put back the current states so
    the replay does not shift the random stream seen by later code."""
    current = _capture_rng(device)
    _restore_rng(state, device)
    try:
        yield
    finally:
        _restore_rng(current, device)
