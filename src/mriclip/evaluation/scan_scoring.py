"""Scan-level zero-shot scores from patches: no annotation needed, only the scan.

A model trained on patches around lesions and elsewhere sees lesions at the scale of a patch.
A whole scan is therefore covered by overlapping patches (:func:`patch_grid`, MONAI's dense
patch slices; patches that are mostly background are dropped), each patch is embedded and
scored against every class prompt, and a scan's score per class aggregates its patches
(:func:`aggregate_patches`).

Per patch, for the lesion target: ``softmax(logit_scale · [cos(region_1) … cos(region_K),
cos(no lesion)])``, the probability of each region and of "no lesion"; its lesion evidence is
1 − p(no lesion). With ``negative: true`` each region is instead scored as a softmax between
its positive and its negative prompt ("There is no lesion in the frontal section."), as CT-CLIP
scores findings. For a scan-level target (e.g. diagnosis) the softmax runs over its classes.

Aggregations of a class's per-patch probabilities p₁ … p_P into a scan score:

- ``max``: max pᵢ, the most convincing patch;
- ``top_k_mean``: mean of the k largest pᵢ (k = ``top_k``; fewer patches: all of them), less
  sensitive to one spurious patch than ``max``;
- ``noisy_or``: 1 − Π(1 − pᵢ), the probability that at least one patch holds it if patches
  were independent (they overlap, so it runs high on large scans);
- ``mean``: mean pᵢ, for evidence spread over the whole image (scan-level targets).

Every value stays in [0, 1].
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from monai.data.utils import compute_importance_map, dense_patch_slices
from scipy.special import softmax

from mriclip.evaluation.prompts import class_embeddings

AGGREGATIONS = ("max", "top_k_mean", "noisy_or", "mean")


def patch_grid(
    shape: tuple[int, int, int],
    patch_size: int,
    stride: int,
    foreground: np.ndarray | None = None,
    min_foreground_fraction: float = 0.0,
) -> np.ndarray:
    """(P, 3) start corners of ``patch_size``³ patches every ``stride`` voxels covering
    ``shape`` (the last patch of each axis flush with the end), keeping those whose share of
    ``foreground`` voxels is at least ``min_foreground_fraction``. A volume no larger than a
    patch is one patch at the origin."""
    if stride < 1 or patch_size < 1:
        raise ValueError(f"patch_size and stride must be >= 1, got {patch_size} and {stride}")
    if any(side < patch_size for side in shape):
        raise ValueError(f"patches of {patch_size}³ do not fit a volume of shape {tuple(shape)}")
    slices = dense_patch_slices(tuple(shape), (patch_size,) * 3, (stride,) * 3)
    starts = np.array([[part.start for part in patch] for patch in slices], dtype=int)
    starts = np.unique(starts, axis=0)
    if foreground is None or min_foreground_fraction <= 0:
        return starts
    fractions = np.array(
        [foreground[tuple(slice(s, s + patch_size) for s in start)].mean() for start in starts]
    )
    return starts[fractions >= min_foreground_fraction]


def patch_class_probabilities(
    patch_embeddings: np.ndarray,
    class_embeddings: np.ndarray,
    logit_scale: float,
    none_embedding: np.ndarray | None = None,
    negative_embeddings: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """(P, K) class probabilities of each patch and, with ``none_embedding``, (P,) p(none).

    Without ``negative_embeddings``: one softmax over the K classes (and "none"). With them:
    class k is softmax([positive_k, negative_k])[0], independently per class; p(none) still
    comes from the softmax over classes and "none"."""
    patches = _unit(patch_embeddings)
    competitors = _unit(class_embeddings)
    if none_embedding is not None:
        competitors = np.vstack([competitors, _unit(np.atleast_2d(none_embedding))])
    joint = softmax(logit_scale * patches @ competitors.T, axis=1)
    n_classes = len(class_embeddings)
    p_none = joint[:, n_classes] if none_embedding is not None else None
    if negative_embeddings is None:
        return joint[:, :n_classes], p_none
    positive = patches @ _unit(class_embeddings).T
    negative = patches @ _unit(negative_embeddings).T
    pairs = np.stack([positive, negative], axis=-1) * logit_scale
    return softmax(pairs, axis=-1)[..., 0], p_none


def aggregate_patches(probabilities: np.ndarray, method: str, top_k: int = 3) -> np.ndarray:
    """(K,) scan scores from (P, K) patch probabilities (see the module docstring)."""
    if method not in AGGREGATIONS:
        raise ValueError(f"scan_scoring.aggregation must be one of {AGGREGATIONS}, got {method!r}")
    probabilities = np.asarray(probabilities, dtype=np.float64)
    if probabilities.ndim != 2 or len(probabilities) == 0:
        raise ValueError(f"need (patches, classes) probabilities, got {probabilities.shape}")
    if method == "max":
        return probabilities.max(axis=0)
    if method == "mean":
        return probabilities.mean(axis=0)
    if method == "noisy_or":
        return 1.0 - np.prod(1.0 - probabilities, axis=0)
    if top_k < 1:
        raise ValueError(f"scan_scoring.top_k must be >= 1, got {top_k}")
    k = min(top_k, len(probabilities))
    return np.sort(probabilities, axis=0)[-k:].mean(axis=0)


def evidence_map(
    shape: tuple[int, int, int],
    starts: np.ndarray,
    patch_size: int,
    values: np.ndarray,
    foreground: np.ndarray | None = None,
) -> np.ndarray:
    """Per-voxel map of patch ``values`` (P,) or (P, C): each voxel the Gaussian-weighted mean
    of the patches covering it (MONAI's importance map, as sliding-window inference blends
    patches); 0 where no patch lies and, given a ``foreground`` mask of ``shape``, outside the
    head (a patch at the head's border says nothing about the air beside it). Shape ``shape``
    or ``(C, *shape)``."""
    values = np.asarray(values, dtype=np.float32)
    channels = values[:, None] if values.ndim == 1 else values
    weight = np.asarray(
        compute_importance_map((patch_size,) * 3, mode="gaussian", sigma_scale=0.25)
    ).astype(np.float32)
    total = np.zeros((channels.shape[1], *shape), dtype=np.float32)
    weights = np.zeros(shape, dtype=np.float32)
    for start, value in zip(starts, channels, strict=True):
        box = tuple(slice(s, s + patch_size) for s in start)
        total[(slice(None), *box)] += value[:, None, None, None] * weight
        weights[box] += weight
    covered = weights > 0
    if foreground is not None:
        covered &= np.asarray(foreground, dtype=bool)
    total[:, covered] /= weights[covered]
    total[:, ~covered] = 0.0
    return total[0] if values.ndim == 1 else total


def resample_to_grid(
    volume: np.ndarray,
    source_affine: np.ndarray,
    target_shape: tuple[int, ...],
    target_affine: np.ndarray,
) -> np.ndarray:
    """``volume`` (on the grid of ``source_affine``; 3D, or channels first) trilinearly
    resampled onto another grid of the same scanner space, e.g. maps on the preprocessed grid
    back onto the input scan's own voxels; 0 outside the source. Every channel in one pass:
    the coordinates are computed once and torch interpolates all channels together."""
    volume = np.asarray(volume, dtype=np.float32)
    stack = torch.from_numpy(np.ascontiguousarray(volume[None] if volume.ndim == 3 else volume))
    target_to_source = torch.from_numpy(np.linalg.inv(source_affine) @ target_affine)
    # grid_sample takes (x, y, z) = (last axis ... first) in [-1, 1] over the voxel centres.
    sizes = torch.tensor(stack.shape[1:], dtype=torch.float64)
    to_unit = torch.diag(torch.cat([2 / (sizes - 1).clamp(min=1), torch.ones(1)]))
    to_unit[:3, 3] = -1
    matrix = (to_unit @ target_to_source)[:3].flip(0).to(torch.float32)
    # Each axis's share of the coordinates, summed by broadcasting: no (N, 3) matmul.
    steps = [
        torch.arange(n, dtype=torch.float32)[:, None] * matrix[:, axis]
        for axis, n in enumerate(target_shape)
    ]
    out = torch.empty((stack.shape[0], *target_shape), dtype=torch.float32)
    rows = max(1, 2**22 // max(1, target_shape[1] * target_shape[2]))  # bounded memory
    for first in range(0, target_shape[0], rows):
        grid = (
            steps[0][first : first + rows, None, None]
            + steps[1][None, :, None]
            + (steps[2] + matrix[:, 3])[None, None]
        )
        out[:, first : first + rows] = torch.nn.functional.grid_sample(
            stack[None], grid[None], mode="bilinear", padding_mode="zeros", align_corners=True
        )[0]  # "bilinear" on a 5D input is trilinear
    return out[0].numpy() if volume.ndim == 3 else out.numpy()


def _unit(matrix: np.ndarray) -> np.ndarray:
    matrix = np.asarray(matrix, dtype=np.float64)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


@dataclass(frozen=True)
class ScanScorer:
    """Zero-shot scores of patches and scans for every target of a spec.

    Args:
        spec: :func:`mriclip.evaluation.prompts.zero_shot_spec` output.
        prompts: :func:`mriclip.evaluation.prompts.prompt_texts` rows of ``spec``.
        vectors: the prompts' text embeddings, row for row.
        logit_scale: the model's ``1 / temperature``.
        ensemble, negative: prompt settings (``evaluation.prompts``).
        aggregation, top_k: how region probabilities of patches become scan scores.
        target_aggregation: the same for scan-level targets (e.g. diagnosis).
    """

    spec: Mapping
    prompts: pd.DataFrame
    vectors: np.ndarray
    logit_scale: float
    ensemble: bool = True
    negative: bool = False
    aggregation: str = "top_k_mean"
    top_k: int = 3
    target_aggregation: str = "mean"

    def __post_init__(self) -> None:
        for method in (self.aggregation, self.target_aggregation):
            if method not in AGGREGATIONS:
                raise ValueError(
                    f"scan_scoring aggregation must be one of {AGGREGATIONS}, got {method!r}"
                )

    @classmethod
    def from_settings(
        cls,
        spec: Mapping,
        prompts: pd.DataFrame,
        vectors: np.ndarray,
        logit_scale: float,
        scoring: Mapping,
        prompt_settings: Mapping,
    ) -> ScanScorer:
        """The scorer that ``evaluation.scan_scoring`` and ``evaluation.prompts`` describe."""
        return cls(
            spec,
            prompts,
            vectors,
            logit_scale,
            ensemble=prompt_settings["ensemble"],
            negative=prompt_settings["negative"],
            aggregation=scoring["aggregation"],
            top_k=scoring["top_k"],
            target_aggregation=scoring["target_aggregation"],
        )

    def _embeddings(self, target: str, kind: str) -> np.ndarray:
        return class_embeddings(self.prompts, self.vectors, target, kind, self.ensemble)

    def patch_probabilities(
        self, patch_embeddings: np.ndarray
    ) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """{target: (P, K) class probabilities} and (P,) lesion evidence (1 − p(no lesion); NaN
        without a lesion target)."""
        result, evidence = {}, None
        for name, target in self.spec["targets"].items():
            negative = None
            if self.negative and target["negative_templates"]:
                negative = self._embeddings(name, "negative")
            none = self._embeddings(name, "none")[0] if target["kind"] == "lesion" else None
            result[name], p_none = patch_class_probabilities(
                patch_embeddings, self._embeddings(name, "positive"), self.logit_scale, none,
                negative,
            )  # fmt: skip
            if p_none is not None:
                evidence = 1.0 - p_none
        if evidence is None:  # no lesion target (a cohort without lesion information)
            evidence = np.full(len(patch_embeddings), np.nan)
        return result, evidence

    def scan_scores(
        self, probabilities: Mapping[str, np.ndarray], evidence: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float]:
        """{target: (K,) scan scores} and the scan's aggregated lesion evidence, from the
        :meth:`patch_probabilities` of its patches."""
        scores = {
            name: aggregate_patches(
                probabilities[name],
                self.aggregation if target["kind"] == "lesion" else self.target_aggregation,
                self.top_k,
            )
            for name, target in self.spec["targets"].items()
        }
        any_lesion = aggregate_patches(evidence[:, None], self.aggregation, self.top_k)[0]
        return scores, float(any_lesion)


def score_columns(spec: Mapping, scores: Mapping[str, np.ndarray]) -> dict[str, float]:
    """{``prob_<class>`` column: value} of a scan's :meth:`ScanScorer.scan_scores`."""
    columns = probability_columns(spec)
    return {
        columns[(name, value)]: float(scores[name][index])
        for name, target in spec["targets"].items()
        for index, value in enumerate(target["classes"])
    }


def probability_columns(spec: Mapping) -> dict[tuple[str, str], str]:
    """(target, class) -> column name: ``prob_<class>``, or ``prob_<target>_<class>`` for a
    class name that several targets share."""
    classes = [value for target in spec["targets"].values() for value in target["classes"]]
    shared = {value for value in classes if classes.count(value) > 1}
    return {
        (name, value): f"prob_{name}_{value}" if value in shared else f"prob_{value}"
        for name, target in spec["targets"].items()
        for value in target["classes"]
    }
