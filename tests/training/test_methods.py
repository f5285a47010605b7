"""The alignment methods (lit, flip, slip, coca): what each changes, and that embedding
accumulation stays gradient-exact with their extra terms.

"Plain step" as in test_accumulation.py: with dropout on, the reference forwards the
micro-batches one after another with autograd (the same random stream), concatenates every
output and backpropagates the loss over all N*B samples once; without dropout (per-sample
instance norm) it is one forward over the concatenated batch. Everything in float64.
"""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from mriclip.models.captioning import CaptionDecoder
from mriclip.models.clip import ClipModel
from mriclip.models.encoders import build_image_encoder
from mriclip.models.factory import clip_model_bundle, create_clip_model, load_clip_model
from mriclip.models.losses import nt_xent_loss
from mriclip.models.mae import block_mask
from mriclip.training.accumulation import accumulated_step
from mriclip.training.alignment import AlignmentTask, train_alignment
from mriclip.training.methods import ALIGNMENT_METHODS, freeze_stages
from mriclip.tuning.cross_validation import FoldInputs, alignment_samples
from tests.conftest import BASE_CONF, alignment_method
from tests.training import test_accumulation as accumulation_tests
from tests.training.test_alignment_loop import config, samples, tiny_model

N_MICRO, MICRO_BATCH, SIDE, TOLERANCE = 3, 2, 8, 1e-6
BASE = yaml.safe_load((BASE_CONF / "parameters_alignment.yml").read_text())["alignment"]


def method_with(name: str, dropout: float):
    return alignment_method(
        name,
        slip={**BASE["slip"], "dropout": dropout, "projection_dim": 8},
        coca={**BASE["coca"], "dropout": dropout, "width": 8, "heads": 2},
    )


def tiny_setup(name: str, dropout: float, norm: str):
    """A float64 model with the method attached: (model with the method's modules, CLIP
    model, extra terms)."""
    clip = accumulation_tests.tiny_model(norm=norm, dropout=dropout)  # BERT vocabulary of 100
    modules, terms = method_with(name, dropout).attach(clip)
    model = nn.ModuleDict({"clip": clip, **modules}).double().train()
    return model, clip, terms


def micro_batches(name: str, same_length: bool = False) -> list[dict]:
    generator = torch.Generator().manual_seed(1)
    batches = []
    for index in range(N_MICRO):
        length = 7 if same_length else 5 + 2 * index
        input_ids = torch.randint(1, accumulation_tests.VOCAB, (MICRO_BATCH, length),
                                  generator=generator)  # fmt: skip
        attention_mask = torch.ones_like(input_ids)
        attention_mask[0, length - 1 - index :] = 0  # micro-batches differ in real tokens
        image = torch.randn(MICRO_BATCH, 1, SIDE, SIDE, SIDE, generator=generator).double()
        if name == "flip":  # what the training items carry
            image = image * ~block_mask((SIDE,) * 3, MICRO_BATCH, 2, 0.5, generator)
        batch = {"image": image, "input_ids": input_ids, "attention_mask": attention_mask}
        if name == "slip":
            batch["views"] = torch.randn(MICRO_BATCH, 2, 1, SIDE, SIDE, SIDE, generator=generator)
            batch["views"] = batch["views"].double()
        batches.append(batch)
    return batches


def plain_step(clip: ClipModel, batches: list[dict], terms: dict) -> float:
    outputs = {tower: [] for tower in ("image", "text", *terms)}
    for batch in batches:
        outputs["image"].append(clip.encode_image(batch["image"]))
        outputs["text"].append(clip.encode_text(batch["input_ids"], batch["attention_mask"]))
        for tower, term in terms.items():
            outputs[tower].append(term.encode(batch, torch.device("cpu")))
    joined = {tower: torch.cat(chunks) for tower, chunks in outputs.items()}
    loss = clip.contrastive_loss(joined["image"], joined["text"])
    for tower, term in terms.items():
        loss = loss + term.loss(joined[tower])
    loss.backward()
    return loss.item()


def run(step, name: str, dropout: float, norm: str, seed: int = 123):
    """``step(clip, terms)`` on a fresh model (the same weights each time), from ``seed``;
    returns the model, the loss and the next random number (where the stream was left)."""
    model, clip, terms = tiny_setup(name, dropout, norm)
    torch.manual_seed(seed)
    loss = step(clip, terms)
    return model, loss, torch.rand(1).item()


def relative_differences(model: nn.Module, reference: nn.Module) -> dict[str, float]:
    differences = {}
    for (name, parameter), (_, expected) in zip(
        model.named_parameters(), reference.named_parameters(), strict=True
    ):
        assert (parameter.grad is None) == (expected.grad is None), name
        if parameter.grad is not None:
            scale = expected.grad.abs().max().clamp_min(1e-8)
            differences[name] = ((parameter.grad - expected.grad).abs().max() / scale).item()
    return differences


@pytest.mark.parametrize("name", ALIGNMENT_METHODS)
def test_accumulated_step_equals_plain_step_with_dropout(name):
    setup = (name, 0.1, "batch")
    batches = micro_batches(name)

    def accumulated(clip, terms):
        return accumulated_step(clip, batches, extra_terms=terms)

    accumulated_model, accumulated_loss, accumulated_next = run(accumulated, *setup)
    plain_model, plain_loss, plain_next = run(lambda c, t: plain_step(c, batches, t), *setup)

    assert accumulated_loss == pytest.approx(plain_loss, rel=1e-12)
    differences = relative_differences(accumulated_model, plain_model)
    assert max(differences.values()) <= TOLERANCE, differences
    trainable = {n for n, p in plain_model.named_parameters() if p.requires_grad}
    assert set(differences) == trainable  # every trainable parameter got a gradient
    assert accumulated_next == plain_next
    if name in ("slip", "coca"):  # the extra head is part of the step
        assert any(not n.startswith("clip.") for n in differences)


@pytest.mark.parametrize("name", ALIGNMENT_METHODS)
def test_accumulated_step_equals_one_big_batch_without_dropout(name):
    setup = (name, 0.0, "instance")
    batches = micro_batches(name, same_length=True)
    big = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}

    accumulated_model, accumulated_loss, _ = run(
        lambda c, t: accumulated_step(c, batches, extra_terms=t), *setup
    )
    plain_model, plain_loss, _ = run(lambda c, t: accumulated_step(c, [big], extra_terms=t), *setup)

    assert accumulated_loss == pytest.approx(plain_loss, rel=1e-10)
    differences = relative_differences(accumulated_model, plain_model)
    assert max(differences.values()) <= TOLERANCE, differences


def test_extra_terms_add_their_loss_to_the_contrastive_one():
    for name in ("slip", "coca"):
        _, clip, terms = tiny_setup(name, dropout=0.0, norm="instance")
        batches = micro_batches(name, same_length=True)
        contrastive = accumulated_step(clip, batches)
        total = accumulated_step(clip, batches, extra_terms=terms)
        assert total > contrastive + 1e-3, name  # NT-Xent and caption CE are positive


def test_nt_xent_matches_a_direct_computation():
    generator = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(4, 5, generator=generator).double(), dim=1)
    b = torch.nn.functional.normalize(torch.randn(4, 5, generator=generator).double(), dim=1)
    views, temperature, n = torch.cat([a, b]).numpy(), 0.3, 4
    losses = []
    for i in range(2 * n):
        partner = (i + n) % (2 * n)
        scores = np.array([views[i] @ views[k] / temperature for k in range(2 * n) if k != i])
        positive = views[i] @ views[partner] / temperature
        losses.append(-(positive - math.log(np.exp(scores).sum())))
    assert nt_xent_loss(a, b, temperature).item() == pytest.approx(np.mean(losses), rel=1e-12)


def test_caption_losses_are_next_token_cross_entropies_over_real_tokens():
    torch.manual_seed(0)
    decoder = CaptionDecoder(6, 50, 16, width=8, layers=2, heads=2, dropout=0.0).double().eval()
    features = torch.randn(2, 6, 2, 2, 2).double()
    ids = torch.randint(0, 50, (2, 7))
    mask = torch.ones_like(ids)
    mask[1, 4:] = 0  # the second sentence has 4 tokens, 3 of them predicted
    rows = decoder.token_losses(features, ids, mask)
    logits = decoder(features, ids[:, :-1]).log_softmax(-1)
    for sample, n_tokens in ((0, 7), (1, 4)):
        expected = -sum(logits[sample, t, ids[sample, t + 1]].item() for t in range(n_tokens - 1))
        assert rows[sample, 0].item() == pytest.approx(expected, rel=1e-12)
        assert rows[sample, 1].item() == n_tokens - 1
    # Untrained, it predicts about uniformly: ln(vocab) a token, not a multiple of it.
    fresh = CaptionDecoder(64, 30522, 32, width=64, layers=2, heads=4, dropout=0.0)
    words = torch.randint(0, 30522, (4, 20))
    fresh_rows = fresh.token_losses(torch.randn(4, 64, 2, 2, 2), words, torch.ones_like(words))
    per_token = fresh_rows[:, 0].sum() / fresh_rows[:, 1].sum()
    assert per_token.item() == pytest.approx(math.log(30522), rel=0.05)
    # Causal: a later token does not change the predictions before it.
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 1) % 50
    torch.testing.assert_close(decoder(features, changed)[:, :5], decoder(features, ids)[:, :5])


def test_the_caption_term_is_the_token_mean_over_the_whole_step():
    model, clip, terms = tiny_setup("coca", dropout=0.0, norm="instance")
    batches = micro_batches("coca", same_length=True)
    rows = torch.cat([terms["caption"].encode(batch, torch.device("cpu")) for batch in batches])
    ids = torch.cat([batch["input_ids"] for batch in batches])
    mask = torch.cat([batch["attention_mask"] for batch in batches])
    features = clip.image_encoder.forward_features(torch.cat([b["image"] for b in batches]))
    logits = model["caption_decoder"](features, ids[:, :-1])
    targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)  # cross_entropy's ignore_index
    expected = BASE["coca"]["weight"] * torch.nn.functional.cross_entropy(
        logits.transpose(1, 2), targets
    )
    assert terms["caption"].loss(rows).item() == pytest.approx(expected.item(), rel=1e-12)


def test_lit_leaves_the_image_tower_bit_identical(tmp_path):
    model = tiny_model()
    image_before = copy.deepcopy(model.image_encoder.state_dict())
    head_before = copy.deepcopy(model.image_head.state_dict())
    trained, history = train_alignment(model, samples(), None, *config(tmp_path, "lit"))
    assert len(history) == 4
    for key, tensor in trained.image_encoder.state_dict().items():
        assert torch.equal(tensor, image_before[key]), key
    assert not all(
        torch.equal(tensor, head_before[key])
        for key, tensor in trained.image_head.state_dict().items()
    )
    trained.train()
    assert not trained.image_encoder.training  # the locked tower stays in eval mode


def test_flip_drops_the_configured_fraction_of_blocks():
    ratio, block = 0.25, 4
    plain = samples(position_channels=True)
    flip = samples(position_channels=True, drop_blocks=(ratio, block))
    n_blocks = (16 // block) ** 3
    for key in [(0, 0), (1, 3), (2, 5)]:
        original, dropped = plain[key], flip[key]
        assert dropped["sentence"] == original["sentence"]
        image, reference = dropped["image"][0], original["image"][0]
        blocks = image.unfold(0, block, block).unfold(1, block, block).unfold(2, block, block)
        zeroed = (blocks.reshape(n_blocks, -1) == 0).all(dim=1)
        assert int(zeroed.sum()) == round(ratio * n_blocks)
        kept = image != 0
        torch.testing.assert_close(image[kept], reference[kept])
        torch.testing.assert_close(dropped["image"][1:], original["image"][1:])  # positions
    assert torch.equal(flip[(1, 3)]["image"], flip[(1, 3)]["image"])  # seeded per item


def test_slip_views_differ_and_are_seeded_per_item():
    method = alignment_method("slip")
    data = samples(position_channels=True, **method.training_items(seed=0))
    item = data[(0, 2)]
    views = item["views"]
    assert views.shape == (2, 4, 16, 16, 16)
    assert not torch.equal(views[0, 0], views[1, 0])
    assert not torch.equal(views[0, 0], item["image"][0])
    torch.testing.assert_close(views[0, 1:], item["image"][1:])  # position channels kept
    torch.testing.assert_close(data[(0, 2)]["views"], views)
    assert item["sentence"] == samples(position_channels=True)[(0, 2)]["sentence"]


def fold_inputs() -> FoldInputs:
    scans = samples().scans
    volumes = {sid: np.ones((16, 16, 16), np.float32) for sid in scans["scan_id"]}
    empty = pd.DataFrame(columns=["scan_id", "region"])
    return FoldInputs(scans, None, volumes, {}, empty, {}, None, {}, [])


@pytest.mark.parametrize("name", ["flip", "slip"])
def test_method_items_are_for_training_only(name):
    params = {**BASE, "mode": "volume", "method": name}
    method = alignment_method(name)
    training = alignment_samples(fold_inputs().scan_sentences, fold_inputs(), params, 0, True,
                                 False, method)  # fmt: skip
    validation = alignment_samples(fold_inputs().scan_sentences, fold_inputs(), params, 0,
                                   False, False, method)  # fmt: skip
    assert set(validation[0]) == {"image", "sentence", "key", "content", "scan_id"}
    assert (validation[0]["image"] == 1).all()
    if name == "flip":
        assert (training[0]["image"] == 0).float().mean().item() == BASE["flip"]["mask_ratio"]
    else:
        assert training[0]["views"].shape == (2, 1, 16, 16, 16)


@pytest.mark.parametrize("name", ["slip", "coca"])
def test_the_saved_model_loads_without_the_extra_heads_and_records_the_method(tmp_path, name):
    text, clip = {"max_length": 24}, {"embed_dim": 8}
    encoder = build_image_encoder("resnet", filters=4, levels=3, subunits=1)
    training, task, method = config(tmp_path, name)
    trained, _ = train_alignment(
        create_clip_model(encoder, text, clip),
        samples(**method.training_items(seed=0)),
        None,
        training,
        task,
        method,
    )
    torch.save(clip_model_bundle(trained, text, clip, method.settings()), tmp_path / "m.pt")
    saved = torch.load(tmp_path / "m.pt", weights_only=True)
    assert saved["config"]["method"] == {"name": name, **BASE[name]}
    loaded = load_clip_model(saved)  # strict: every tensor, nothing more
    for key, tensor in trained.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], tensor), key


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "clipp"}, "alignment.method must be one of"),
        ({"flip": {**BASE["flip"], "mask_ratio": 1.0}}, r"alignment.flip.mask_ratio must be in"),
        ({"slip": {**BASE["slip"], "temperature": 0.0}}, "alignment.slip needs"),
        (
            {
                "slip": {
                    **BASE["slip"],
                    "augmentation": {
                        key: 0.0 for key in BASE["slip"]["augmentation"] if key.endswith("_prob")
                    },
                }
            },
            "every probability at 0",
        ),
    ],
)
def test_bad_method_parameters(changes, message):
    with pytest.raises(ValueError, match=message):
        alignment_method(changes.pop("method", "clip"), **changes)


def test_freeze_all_stages_freezes_every_one_and_says_how_many():
    stages = [torch.nn.Linear(2, 2), torch.nn.Linear(2, 2)]
    assert freeze_stages(stages, "all", "text") == 2
    assert not any(p.requires_grad for stage in stages for p in stage.parameters())
    with pytest.raises(ValueError, match="cannot freeze most text stages"):
        freeze_stages(stages, "most", "text")


@pytest.mark.parametrize(("name", "term"), [("slip", "simclr"), ("coca", "caption")])
def test_a_task_with_extra_terms_pickles_for_distributed_workers(tmp_path, name, term):
    """Distributed training sends the task to its workers pickled; the copy's terms must use
    the copy's own heads."""
    _, task_config, method = config(tmp_path, name, presence_weight=5.0)
    copied = pickle.loads(pickle.dumps(AlignmentTask(tiny_model(), task_config, method)))
    assert set(copied.extra_terms) == {term, "presence", "presence_features"}  # conf/base's heads
    for presence_term in ("presence", "presence_features"):
        presence = copied.extra_terms[presence_term].loss.__self__
        assert presence.head is copied.model[f"{presence_term}_head"]
    assert copied.extra_terms[term].encode.__self__.model is copied.clip
