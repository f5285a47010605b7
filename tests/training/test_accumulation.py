"""Gradient exactness of embedding accumulation, and why the reference scheme is not exact.

What "the plain step" means here. With dropout on, no accumulation scheme can reproduce the
masks of one forward over all N*B samples: the mask tensors have other shapes, so the random
stream is consumed differently. The meaningful claim is that the accumulated gradient equals
the gradient of the loss over all N*B pairs *for the same forward computation*. So the plain
reference forwards the N micro-batches one after another with autograd on, from the same seed
(hence the same dropout masks, and the same per-micro-batch BatchNorm statistics as the
accumulated step's forwards), concatenates the embeddings, computes the loss over all N*B pairs
and backpropagates once. Without dropout and with per-sample normalisation (instance norm,
layer norm) one forward over the concatenated N*B batch is the same computation, and we compare
against that too. Everything runs in float64 so the 1e-4 tolerance tests the algorithm, not
rounding.
"""

from __future__ import annotations

import copy

import pytest
import torch
from transformers import BertConfig

from mriclip.models.clip import ClipModel
from mriclip.models.encoders import build_image_encoder
from mriclip.models.losses import positive_mask_from_keys
from mriclip.text.encoder import TextEncoder
from mriclip.training.accumulation import accumulated_step

N_MICRO, MICRO_BATCH, SIDE, VOCAB, TOLERANCE = 3, 2, 8, 100, 1e-4


def tiny_model(norm: str = "instance", dropout: float = 0.1, loss: str = "clip") -> ClipModel:
    torch.manual_seed(0)
    image_encoder = build_image_encoder("resnet", filters=4, levels=3, subunits=1, norm=norm)
    text_config = BertConfig(
        vocab_size=VOCAB,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=32,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    text_encoder = TextEncoder(config=text_config)
    model = ClipModel(image_encoder, text_encoder, embed_dim=8, dropout=dropout, loss=loss)
    return model.double().train()


def micro_batches(with_keys: bool = False, same_length: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for index in range(N_MICRO):
        length = 7 if same_length else 5 + 2 * index
        input_ids = torch.randint(1, VOCAB, (MICRO_BATCH, length), generator=generator)
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, length - 2 :] = 0  # one padded sentence per micro-batch
        batch = {
            "image": torch.randn(MICRO_BATCH, 1, SIDE, SIDE, SIDE, generator=generator).double(),
            "input_ids": input_ids,
            "attention_mask": attention_mask,
        }
        if with_keys:
            # Keys repeat across micro-batches, so label-aware targets have several positives.
            batch["key"] = [("frontal", "cerebellar"), f"sentence {index % 2}"]
        batches.append(batch)
    return batches


def all_keys(batches: list[dict]) -> list | None:
    return [key for batch in batches for key in batch["key"]] if "key" in batches[0] else None


def plain_step_per_micro_batch(model: ClipModel, batches: list[dict]) -> float:
    """Loss over all N*B pairs from per-micro-batch forwards with autograd, one backward."""
    outputs = [model(b["image"], b["input_ids"], b["attention_mask"]) for b in batches]
    image_emb = torch.cat([image for image, _ in outputs])
    text_emb = torch.cat([text for _, text in outputs])
    keys = all_keys(batches)
    mask = positive_mask_from_keys(keys) if keys else None
    loss = model.contrastive_loss(image_emb, text_emb, mask)
    loss.backward()
    return loss.item()


def plain_step_concatenated(model: ClipModel, batches: list[dict]) -> float:
    """One forward and backward over the concatenation of all micro-batches."""
    image, input_ids, attention_mask = (
        torch.cat([b[name] for b in batches]) for name in ("image", "input_ids", "attention_mask")
    )
    loss = model.contrastive_loss(*model(image, input_ids, attention_mask))
    loss.backward()
    return loss.item()


def reference_accumulated_step(model: ClipModel, batches: list[dict]) -> float:
    """The paper's / open_clip's scheme, kept here only to show that it is not exact: cache
    embeddings without grad, then per micro-batch re-forward *without RNG replay*, splice it
    into the cached embeddings and backpropagate the whole loss (so the temperature gets its
    gradient N times)."""
    with torch.no_grad():
        cached = [model(b["image"], b["input_ids"], b["attention_mask"]) for b in batches]
    total = 0.0
    for index, batch in enumerate(batches):
        fresh = model(batch["image"], batch["input_ids"], batch["attention_mask"])
        spliced = [fresh if other == index else cached[other] for other in range(len(batches))]
        loss = model.contrastive_loss(
            torch.cat([image for image, _ in spliced]), torch.cat([text for _, text in spliced])
        )
        loss.backward()
        total = loss.item()
    return total


def run_from_seed(step, model: ClipModel, batches: list[dict], seed: int = 123):
    """Run ``step`` on a fresh copy of ``model`` from ``seed``; return the copy, loss and the
    next random number (which shows where the random stream was left)."""
    model = copy.deepcopy(model)
    torch.manual_seed(seed)
    loss = step(model, batches)
    return model, loss, torch.rand(1).item()


def max_relative_grad_difference(model: ClipModel, reference: ClipModel) -> dict[str, float]:
    differences = {}
    for (name, param), (ref_name, ref_param) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert name == ref_name
        assert (param.grad is None) == (ref_param.grad is None), name
        if param.grad is None:
            continue
        # A floor, because some gradients are exactly zero in theory and rounding noise in
        # practice (a conv bias right before instance norm): those are compared absolutely.
        scale = ref_param.grad.abs().max().clamp_min(1e-8)
        differences[name] = ((param.grad - ref_param.grad).abs().max() / scale).item()
    assert differences, "no parameter received a gradient"
    return differences


@pytest.mark.parametrize(("loss", "with_keys"), [("clip", False), ("clip", True), ("siglip", True)])
def test_accumulated_gradients_equal_plain_with_dropout_and_batchnorm(loss, with_keys):
    model = tiny_model(norm="batch", dropout=0.1, loss=loss)
    batches = micro_batches(with_keys=with_keys)

    accumulated, accumulated_loss, accumulated_next = run_from_seed(
        accumulated_step, model, batches
    )
    plain, plain_loss, plain_next = run_from_seed(plain_step_per_micro_batch, model, batches)

    assert accumulated_loss == pytest.approx(plain_loss, rel=1e-12)
    differences = max_relative_grad_difference(accumulated, plain)
    assert max(differences.values()) <= TOLERANCE, differences
    # Every parameter was reached, the temperature (and SigLIP bias) included.
    assert set(differences) == {name for name, _ in model.named_parameters()}
    # The replay restored the random stream: later code sees the same numbers as after plain.
    assert accumulated_next == plain_next


def test_accumulated_gradients_equal_one_forward_over_all_pairs_without_dropout():
    model = tiny_model(norm="instance", dropout=0.0)
    batches = micro_batches(same_length=True)

    accumulated, accumulated_loss, _ = run_from_seed(accumulated_step, model, batches)
    plain, plain_loss, _ = run_from_seed(plain_step_concatenated, model, batches)

    assert accumulated_loss == pytest.approx(plain_loss, rel=1e-10)
    differences = max_relative_grad_difference(accumulated, plain)
    assert max(differences.values()) <= TOLERANCE, differences


def test_reference_scheme_is_not_exact_with_dropout():
    model = tiny_model(norm="instance", dropout=0.1)
    batches = micro_batches()

    reference, _, _ = run_from_seed(reference_accumulated_step, model, batches)
    plain, _, _ = run_from_seed(plain_step_per_micro_batch, model, batches)

    differences = max_relative_grad_difference(reference, plain)
    encoder_differences = [v for k, v in differences.items() if k.startswith("text_encoder")]
    assert max(encoder_differences) > 100 * TOLERANCE


def test_reference_scheme_gives_temperature_n_times_its_gradient():
    model = tiny_model(norm="instance", dropout=0.0)
    batches = micro_batches()

    reference, _, _ = run_from_seed(reference_accumulated_step, model, batches)
    accumulated, _, _ = run_from_seed(accumulated_step, model, batches)
    plain, _, _ = run_from_seed(plain_step_per_micro_batch, model, batches)

    true_grad = plain.log_logit_scale.grad
    assert accumulated.log_logit_scale.grad == pytest.approx(true_grad.item(), rel=1e-10)
    assert reference.log_logit_scale.grad == pytest.approx(N_MICRO * true_grad.item(), rel=1e-8)
    # Without dropout the reference's encoder gradients are exact; only the temperature is off.
    differences = max_relative_grad_difference(reference, plain)
    assert differences.pop("log_logit_scale") == pytest.approx(N_MICRO - 1, rel=1e-6)
    assert max(differences.values()) <= TOLERANCE


def test_batchnorm_running_stats_updated_once_per_micro_batch():
    model = tiny_model(norm="batch", dropout=0.1)
    batches = micro_batches()

    accumulated, _, _ = run_from_seed(accumulated_step, model, batches)

    def forward_once_per_micro_batch(model, batches):
        with torch.no_grad():
            for batch in batches:
                model(batch["image"], batch["input_ids"], batch["attention_mask"])

    forwarded, _, _ = run_from_seed(forward_once_per_micro_batch, model, batches)
    buffers = dict(accumulated.named_buffers())
    batchnorm_counters = [name for name in buffers if name.endswith("num_batches_tracked")]
    assert batchnorm_counters
    for name, expected in forwarded.named_buffers():
        assert torch.equal(buffers[name], expected), name
    assert all(buffers[name].item() == N_MICRO for name in batchnorm_counters)


def test_single_micro_batch_is_a_plain_step():
    model = tiny_model(norm="batch", dropout=0.1)
    batches = micro_batches()[:1]

    accumulated, accumulated_loss, _ = run_from_seed(accumulated_step, model, batches)
    plain, plain_loss, _ = run_from_seed(plain_step_per_micro_batch, model, batches)

    assert accumulated_loss == plain_loss
    for (name, param), (_, ref_param) in zip(
        accumulated.named_parameters(), plain.named_parameters(), strict=True
    ):
        assert torch.equal(param.grad, ref_param.grad), name
    assert all(
        buffer.item() == 1
        for name, buffer in accumulated.named_buffers()
        if name.endswith("num_batches_tracked")
    )


def test_bfloat16_autocast_runs_and_stays_close_to_full_precision():
    model = tiny_model(norm="instance", dropout=0.0).float()
    batches = [
        {**batch, "image": batch["image"].float()} for batch in micro_batches(same_length=True)
    ]

    def bf16_step(model, batches):
        return accumulated_step(model, batches, autocast_dtype=torch.bfloat16)

    low, low_loss, _ = run_from_seed(bf16_step, model, batches)
    full, full_loss, _ = run_from_seed(accumulated_step, model, batches)

    assert low_loss == pytest.approx(full_loss, rel=2e-2)
    assert low.log_logit_scale.grad == pytest.approx(full.log_logit_scale.grad.item(), rel=0.1)


def test_mixing_micro_batches_with_and_without_keys_is_an_error():
    model = tiny_model()
    batches = micro_batches(with_keys=True)
    del batches[1]["key"]
    with pytest.raises(ValueError, match="carry 'key'"):
        accumulated_step(model, batches)


def test_a_loss_that_ignores_a_tower_leaves_that_tower_without_gradient():
    model = tiny_model(norm="instance", dropout=0.1)
    batches = micro_batches()

    def image_only(image_emb, text_emb, positive_mask):
        return image_emb[:, 0].sum()

    def accumulated_image_only(model, batches):
        return accumulated_step(model, batches, loss_fn=image_only)

    accumulated, _, _ = run_from_seed(accumulated_image_only, model, batches)
    assert all(p.grad is None for p in accumulated.text_encoder.parameters())
    assert all(p.grad is not None for p in accumulated.image_encoder.parameters())
