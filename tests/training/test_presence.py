"""The lesion-presence term (``alignment.training.presence_weight``, its heads on the image
embeddings or the pooled features: ``presence_heads``): its targets, its loss, gradient-exact
accumulation with it, that it adds no forward of the image tower, that it teaches the image
tower lesion presence, and that at 0 nothing of it is built."""

from __future__ import annotations

import pytest
import torch
from sklearn.metrics import roc_auc_score
from torch import nn

from mriclip.training.accumulation import ExtraTerm, accumulated_step
from mriclip.training.alignment import AlignmentTask, to_micro_batch, train_alignment
from mriclip.training.methods import presence_term
from tests.training import test_accumulation as accumulation_tests
from tests.training.test_alignment_loop import config, samples, tiny_model
from tests.training.test_methods import micro_batches, relative_differences

WEIGHT = 0.7


def with_lesions(batches: list[dict]) -> list[dict]:
    """Each micro-batch with one item whose sentence names a lesion and one that does not."""
    return [{**batch, "lesion": torch.tensor([1.0, 0.0])} for batch in batches]


def presence_setup(reads: str = "embeddings"):
    clip = accumulation_tests.tiny_model(norm="instance", dropout=0.0)
    torch.manual_seed(5)
    width = clip.embed_dim if reads == "embeddings" else clip.image_encoder.feature_dim
    head = nn.Linear(width, 1).double()
    model = nn.ModuleDict({"clip": clip, "presence_head": head}).train()
    return model, clip, {"presence": presence_term(head, WEIGHT, reads)}


def read(clip, images: torch.Tensor, reads: str) -> torch.Tensor:
    """What a head that ``reads`` sees of ``images``, computed apart from the term."""
    return clip.encode_image(images) if reads == "embeddings" else clip.image_encoder(images)


READS = pytest.mark.parametrize("reads", ["embeddings", "features"])


def test_micro_batches_mark_the_items_whose_sentence_names_a_lesion():
    model = tiny_model()
    batch = {
        "image": torch.zeros(3, 1, 8, 8, 8),
        "sentence": ["No lesion is visible.", "A lesion in the frontal lobe.", "Two lesions."],
        "key": ["", "frontal", "parietal;temporal"],
        "content": ["a", "b", "c"],
    }
    cpu = torch.device("cpu")
    marked = to_micro_batch(model, batch, cpu, "sentence", presence=True)
    assert marked["lesion"].tolist() == [0.0, 1.0, 1.0]
    assert "lesion" not in to_micro_batch(model, batch, cpu, "sentence")


@READS
def test_the_term_is_the_weighted_cross_entropy_over_the_whole_step(reads):
    model, clip, terms = presence_setup(reads)
    batches = with_lesions(micro_batches("clip", same_length=True))
    cpu = torch.device("cpu")
    rows = torch.cat([terms["presence"].encode(batch, cpu) for batch in batches])
    images = torch.cat([batch["image"] for batch in batches])
    seen = read(clip, images, reads)
    logits = model["presence_head"](seen)[:, 0]
    targets = torch.cat([batch["lesion"] for batch in batches]).double()
    expected = WEIGHT * nn.functional.binary_cross_entropy_with_logits(logits, targets)
    loss = terms["presence"].loss(rows, seen)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-10)
    contrastive = accumulated_step(clip, batches)
    total = accumulated_step(clip, batches, extra_terms=terms)
    assert total == pytest.approx(contrastive + expected.item(), rel=1e-10)


@READS
def test_accumulation_stays_gradient_exact_with_the_term(reads):
    batches = with_lesions(micro_batches("clip", same_length=True))
    big = {key: torch.cat([batch[key] for batch in batches]) for key in batches[0]}
    results = []
    for step_batches in (batches, [big]):
        model, clip, terms = presence_setup(reads)
        accumulated_step(clip, step_batches, extra_terms=terms)
        results.append(model)
    differences = relative_differences(*results)
    assert "presence_head.weight" in differences  # the head learns in the step
    assert max(differences.values()) <= 1e-6, differences


@READS
def test_the_term_runs_no_forward_of_the_image_tower_of_its_own(reads):
    batches = with_lesions(micro_batches("clip", same_length=True))
    forwards = {False: 0, True: 0}

    def counted(with_term: bool) -> None:
        forwards[with_term] += 1

    for with_term in forwards:
        _, clip, terms = presence_setup(reads)
        clip.image_encoder.register_forward_hook(lambda *_, run=with_term: counted(run))
        accumulated_step(clip, batches, extra_terms=terms if with_term else {})
    # the cached pass and the replays, the last micro-batch forwarded once
    assert forwards[False] == forwards[True] == 2 * len(batches) - 1


@READS
def test_the_term_teaches_the_image_tower_to_see_a_faint_blob(reads):
    """Images of noise, half with a faint 3³ blob (+1 sd) somewhere: the term alone, a few
    dozen steps, separates unseen images by the blob."""

    def images(n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        volume = torch.randn(n, 1, 8, 8, 8, generator=generator, dtype=torch.float64)
        lesion = torch.arange(n) % 2 == 0
        for index in torch.nonzero(lesion)[:, 0]:
            x, y, z = torch.randint(1, 5, (3,), generator=generator).tolist()
            volume[index, 0, x : x + 3, y : y + 3, z : z + 3] += 1.0
        return volume, lesion.double()

    model, clip, terms = presence_setup(reads)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(0)
    test_images, test_labels = images(64, generator)

    def auc() -> float:
        model.eval()
        with torch.no_grad():
            scores = model["presence_head"](read(clip, test_images, reads))[:, 0]
        model.train()
        return roc_auc_score(test_labels.numpy(), scores.numpy())

    before = auc()
    for _ in range(60):
        image, lesion = images(16, generator)
        optimiser.zero_grad()
        rows = terms["presence"].encode({"image": image, "lesion": lesion}, torch.device("cpu"))
        terms["presence"].loss(rows, read(clip, image, reads)).backward()
        optimiser.step()
    after = auc()
    assert after > max(0.85, before + 0.2)


def test_weight_zero_builds_nothing_and_a_positive_weight_trains_and_is_left_out(tmp_path):
    _, off, method = config(tmp_path / "off", presence_weight=0.0)
    task = AlignmentTask(tiny_model(), off, method)
    assert "presence" not in task.extra_terms and "presence_head" not in task.model

    training, on, method = config(tmp_path / "on", presence_weight=1.0)
    task = AlignmentTask(tiny_model(), on, method)
    assert "presence" in task.extra_terms and "presence_head" in task.model
    model, history = train_alignment(tiny_model(), samples(), None, training, on, method)
    assert len(history) == training.steps
    assert not any("presence" in name for name in model.state_dict())  # the CLIP model only


def test_a_negative_weight_is_refused(tmp_path):
    with pytest.raises(ValueError, match="presence_weight must be >= 0"):
        config(tmp_path, presence_weight=-1.0)


def test_both_heads_are_built_and_train_in_the_one_forward(tmp_path):
    training, both, method = config(tmp_path, presence_weight=1.0,
                                    presence_heads=["embeddings", "features"])  # fmt: skip
    task = AlignmentTask(tiny_model(), both, method)
    assert set(task.extra_terms) == {"presence", "presence_features"}
    assert task.model["presence_head"].in_features == task.clip.embed_dim
    assert task.model["presence_features_head"].in_features == task.clip.image_encoder.feature_dim
    model, history = train_alignment(tiny_model(), samples(), None, training, both, method)
    assert len(history) == training.steps
    assert not any("presence" in name for name in model.state_dict())


def test_one_head_may_be_named_alone(tmp_path):
    _, alone, _ = config(tmp_path, presence_heads="features")
    assert alone.presence_heads == ("features",)


@pytest.mark.parametrize("heads", [[], ["pixels"], ["features", "features"], "pixels"])
def test_unknown_missing_or_repeated_heads_are_refused(tmp_path, heads):
    with pytest.raises(ValueError, match="presence_heads must list some of"):
        config(tmp_path, presence_heads=heads)


def test_an_extra_term_reads_only_what_the_image_tower_gives():
    with pytest.raises(ValueError, match="an extra term reads one of"):
        ExtraTerm(lambda batch, device: batch, lambda rows: rows.sum(), reads="text")
