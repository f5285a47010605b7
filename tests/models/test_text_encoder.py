"""Text encoder: the packaged offline MiniLM, pooling with attention masks, stages, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from transformers import BertConfig

import mriclip.text.encoder as text_encoder_module
from mriclip.text.encoder import TextEncoder


@pytest.fixture(scope="module")
def packaged() -> TextEncoder:
    return TextEncoder(pooling="mean").eval()


def embed(encoder: TextEncoder, texts: list[str]) -> torch.Tensor:
    with torch.no_grad():
        return encoder(**encoder.tokenize(texts))


def test_packaged_model_embeds_sentences_meaningfully(packaged):
    sentences = [
        "There is a lesion in the frontal section.",
        "A lesion is located in the frontal lobe.",
        "The weather is sunny today.",
    ]
    embeddings = F.normalize(embed(packaged, sentences), dim=1)
    assert embeddings.shape == (3, 384) and packaged.hidden_size == 384
    assert torch.isfinite(embeddings).all()
    related, unrelated = embeddings[0] @ embeddings[1], embeddings[0] @ embeddings[2]
    # Trained weights put paraphrases far closer than unrelated text; random ones would not.
    assert related > unrelated + 0.3


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_a_sentence_embedding(packaged, pooling):
    packaged.pooling = pooling
    alone = embed(packaged, ["lesion in the cerebellum"])
    padded = embed(packaged, ["lesion in the cerebellum", "a much longer sentence " * 5])[:1]
    assert torch.allclose(alone, padded, atol=1e-5)


def test_tokenize_truncates_and_pads(packaged):
    packaged.max_length = 8
    try:
        longest = packaged.tokenize(["one two three four five six seven eight nine", "hi"])
        fixed = packaged.tokenize(["hi"], padding="max_length")
    finally:
        packaged.max_length = 64
    assert longest["input_ids"].shape == longest["attention_mask"].shape == (2, 8)
    assert longest["attention_mask"][1].tolist() == [1, 1, 1, 0, 0, 0, 0, 0]
    assert fixed["input_ids"].shape == (1, 8)


def test_stages_are_embeddings_then_layers_and_cover_all_parameters():
    config = BertConfig(
        hidden_size=16, num_hidden_layers=3, num_attention_heads=2, intermediate_size=32
    )
    encoder = TextEncoder(config=config)
    stages = encoder.stages()
    assert len(stages) == 1 + config.num_hidden_layers
    in_stages = {id(p) for stage in stages for p in stage.parameters()}
    assert in_stages == {id(p) for p in encoder.parameters()}  # no unused pooler left behind
    batch = encoder.tokenize(["a b c", "d"])
    assert encoder(**batch).shape == (2, 16)


def test_bad_pooling_and_unavailable_hub_model_raise_clear_errors(monkeypatch):
    with pytest.raises(ValueError, match="pooling"):
        TextEncoder(pooling="max")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TextEncoder("./no/such/model")

    def offline(source, config, local_files_only):
        raise OSError("not cached and no network")

    monkeypatch.setattr(text_encoder_module, "_load", offline)
    with pytest.raises(OSError, match="could not load text model 'someorg/some-bert'"):
        TextEncoder("someorg/some-bert")


def test_locked_tower_matches_eval_features_encodes_each_sentence_once_and_stays_in_eval():
    encoder = TextEncoder(pooling="mean")
    sentences = ["A lesion is in the frontal lobe.", "No lesion is visible.", "Cerebellar mass."]
    with torch.no_grad():
        expected = encoder.eval()(**encoder.tokenize(sentences))
    encoder.lock()
    encoder.train()  # a locked tower must not drop out: its cached features would be wrong
    assert not encoder.model.training
    assert not any(p.requires_grad for p in encoder.parameters())
    calls = []
    encoder.model.register_forward_hook(lambda module, args, output: calls.append(1))
    # Repeats in one batch and across batches, padded to different lengths each time.
    first = encoder(**encoder.tokenize([sentences[0], sentences[0], sentences[1]]))
    second = encoder(**encoder.tokenize(sentences[::-1]))
    assert len(calls) == 2  # once for the two new sentences, once for the one left
    torch.testing.assert_close(first, expected[[0, 0, 1]], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(second, expected[[2, 1, 0]], atol=1e-5, rtol=1e-5)
    encoder(**encoder.tokenize(sentences))
    assert len(calls) == 2
