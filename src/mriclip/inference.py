"""A trained model applied to new, unannotated scans: predictions, embeddings, text queries and
evidence maps, from the model bundle alone.

The bundle (``clip_model``) carries the preprocessing settings its training volumes had, the
sequences they stacked as channels (with the missing-sequence rule; a bundle without them is
single-sequence), the patch size and the zero-shot spec (targets, classes, prompt templates).
A new scan is read by the same data contract, goes through exactly that preprocessing, is
covered by patches as at evaluation (:mod:`mriclip.evaluation.scan_scoring`), and gets per
class the aggregated probability. The lesion evidence of the patches, blended into a map on
the preprocessed grid, is resampled onto the input scan's own grid and affine (a
multi-sequence scan's: its first sequence's), so it opens over the input in any viewer.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import nibabel as nib
import numpy as np
import pandas as pd

from mriclip.evaluation.embedding import embed_patches, scan_patches
from mriclip.evaluation.prompts import prompt_texts
from mriclip.evaluation.scan_scoring import (
    ScanScorer,
    aggregate_patches,
    evidence_map,
    probability_columns,
    resample_to_grid,
    score_columns,
)
from mriclip.imaging import registration
from mriclip.imaging.collection import ScanSource, load_channels
from mriclip.imaging.file_index import SequenceContract
from mriclip.imaging.preprocessing import PreprocessingConfig, preprocess_scan
from mriclip.models.clip import ClipModel
from mriclip.models.factory import embed_texts
from mriclip.training.samples import is_foreground, spatial_shape

logger = logging.getLogger(__name__)


class IncompatibleBundleError(ValueError):
    """The model bundle lacks what inference needs, or asks for preprocessing that cannot be
    reproduced here; the message says which and why."""


@dataclass(frozen=True)
class InferenceSpec:
    """What the bundle says inference must do."""

    preprocessing: PreprocessingConfig
    mode: str
    patch_size: int
    zero_shot: Mapping
    #: how a scan's files are read, as in training; None: one image per scan
    sequences: SequenceContract | None = None


#: How messages name the bundle's sequence settings.
BUNDLE_SETTINGS = "the clip_model bundle's inference"


def inference_spec(bundle: Mapping) -> InferenceSpec:
    """Read and check the bundle's inference settings; refuse what cannot be reproduced."""
    settings = bundle.get("inference")
    if not settings:
        raise IncompatibleBundleError(
            "the clip_model bundle has no 'inference' settings (preprocessing, patch size, "
            "zero-shot targets): it was saved by an older mriclip; re-run the alignment "
            "pipeline to get a bundle inference can use"
        )
    missing = [
        key for key in ("preprocessing", "mode", "patch_size", "zero_shot") if key not in settings
    ]
    if missing:
        raise IncompatibleBundleError(f"the clip_model bundle's inference settings lack {missing}")
    preprocessing = dict(settings["preprocessing"])
    known = {field.name for field in dataclasses.fields(PreprocessingConfig)}
    unknown = sorted(set(preprocessing) - known)
    if unknown:
        raise IncompatibleBundleError(
            f"the model was trained on volumes preprocessed with settings {unknown} that this "
            f"mriclip does not know (it knows {sorted(known)}); use the mriclip version that "
            "trained the model"
        )
    absent = sorted(known - set(preprocessing))
    if absent:
        raise IncompatibleBundleError(
            f"the bundle does not record the preprocessing settings {absent}, so inference "
            "cannot bring new scans to the training volumes' grid and intensities"
        )
    try:
        config = PreprocessingConfig(**preprocessing)
    except (TypeError, ValueError) as error:
        raise IncompatibleBundleError(
            f"the bundle's preprocessing settings are invalid: {error}"
        ) from error
    needs_sitk = [
        step
        for step, used in (
            ("N4 bias-corrected", config.n4_bias_correction),
            (f"{config.registration}-registered", config.registration != "none"),
        )
        if used
    ]
    if needs_sitk and importlib.util.find_spec("SimpleITK") is None:
        raise IncompatibleBundleError(
            f"the model was trained on {' and '.join(needs_sitk)} volumes but SimpleITK is not "
            "installed here (pip install SimpleITK)"
        )
    if config.registration != "none":
        try:
            registration.template_path(config.registration_template)
        except (FileNotFoundError, ModuleNotFoundError) as error:
            raise IncompatibleBundleError(
                f"the model was trained on volumes registered to the template "
                f"{config.registration_template!r}, which is not available here: {error}"
            ) from error
    if settings["mode"] == "patch" and settings["patch_size"] > min(config.target_shape):
        raise IncompatibleBundleError(
            f"patch size {settings['patch_size']} exceeds the preprocessed grid "
            f"{tuple(config.target_shape)}"
        )
    return InferenceSpec(
        config,
        settings["mode"],
        int(settings["patch_size"]),
        settings["zero_shot"],
        sequence_contract(settings, bundle["config"]["image_encoder"].get("in_channels", 1)),
    )


def sequence_contract(settings: Mapping, in_channels: int) -> SequenceContract | None:
    """The sequences a bundle's model was trained on (None: one image per scan, as bundles
    from before multi-sequence data are), checked against its image encoder's
    ``in_channels``."""
    sequences = settings.get("sequences")
    if sequences is None:
        contract = None
    elif "missing_sequences" not in settings:
        raise IncompatibleBundleError(
            "the clip_model bundle records the sequences but not the missing-sequence rule "
            "(inference.missing_sequences), so new scans cannot be read as training read them"
        )
    else:
        try:
            contract = SequenceContract(sequences, settings["missing_sequences"], BUNDLE_SETTINGS)
        except ValueError as error:
            raise IncompatibleBundleError(str(error)) from error
    if contract is None and in_channels != 1:
        raise IncompatibleBundleError(
            f"the model's image encoder takes {in_channels} image channels (sequences) but the "
            "bundle does not record which: it was saved before mriclip recorded them; re-run "
            "the alignment pipeline on the data it was trained on"
        )
    if contract is not None and len(contract.sequences) != in_channels:
        raise IncompatibleBundleError(
            f"the bundle records the sequences {list(contract.sequences)} but its image "
            f"encoder takes {in_channels} image channel(s): the bundle is inconsistent"
        )
    return contract


def build_scorer(model: ClipModel, spec: Mapping, scoring: Mapping, prompts: Mapping) -> ScanScorer:
    """The zero-shot scorer of ``spec``'s prompts with this model's text tower."""
    texts = prompt_texts(spec)
    vectors = embed_texts(model, list(texts["text"])).numpy()
    logit_scale = float(model.logit_scale.detach())
    return ScanScorer.from_settings(spec, texts, vectors, logit_scale, scoring, prompts)


@dataclass
class PreparedScan:
    """A new scan read and preprocessed as the model's training volumes were: what a worker
    hands back for scoring."""

    volume: np.ndarray  # on the preprocessed grid, channels first for several sequences
    report: dict  # preprocess_scan's, with the output grid's affine
    input_shape: tuple[int, int, int]  # the input scan's grid (its first sequence's)
    input_affine: np.ndarray


def prepare_scan(job: tuple[ScanSource, PreprocessingConfig]) -> PreparedScan:
    """Read a scan's channels (:func:`mriclip.imaging.collection.load_channels`) and
    preprocess them; module-level, so that workers can run it."""
    source, config = job
    image, channels = load_channels(source)
    volume, _, report = preprocess_scan(image, channels[0], None, config, channels[1:])
    return PreparedScan(volume, report, tuple(channels[0].shape), image.affine)


@dataclass(frozen=True)
class EvidenceMaps:
    """A scan's evidence maps as what makes them: its patches' values, where they lie and the
    head on the preprocessed grid, and the two grids' affines. Kept this small (kilobytes,
    not the maps' megabytes) until written, so a run over thousands of scans holds no maps;
    calling it makes the 4D image on the input grid, as Kedro's ``PartitionedDataset`` does
    when it writes the partition (lazy saving)."""

    values: np.ndarray  # (patches, channels): lesion evidence, then each region's probability
    starts: np.ndarray  # (patches, 3) on the preprocessed grid
    patch_size: int
    head: np.ndarray  # the preprocessed grid's head mask, np.packbits'ed
    grid_shape: tuple[int, int, int]
    grid_affine: np.ndarray
    input_shape: tuple[int, int, int]
    input_affine: np.ndarray

    def __call__(self) -> nib.Nifti1Image:
        """The maps on the input grid, 0 outside the head (a patch at the head's border says
        nothing about the air beside it); written as 8 bits with NIfTI scaling (steps of
        1/255 of the range), which every reader turns back into the probabilities."""
        head = np.unpackbits(self.head, count=int(np.prod(self.grid_shape))).astype(bool)
        maps = evidence_map(self.grid_shape, self.starts, self.patch_size, self.values,
                            head.reshape(self.grid_shape))  # fmt: skip
        on_input = resample_to_grid(maps, self.grid_affine, self.input_shape, self.input_affine)
        image = nib.Nifti1Image(np.moveaxis(on_input, 0, -1), self.input_affine)
        image.set_data_dtype(np.uint8)
        return image


@dataclass
class ScanPrediction:
    """One scan's result: scores per ``prob_<class>`` column, its embedding, the patches'
    embeddings (for text queries) and its evidence maps."""

    scores: dict[str, float]
    any_lesion: float
    embedding: np.ndarray
    patch_embeddings: np.ndarray
    evidence: EvidenceMaps
    n_patches: int


def predict_scan(
    model: ClipModel,
    scorer: ScanScorer,
    spec: InferenceSpec,
    scan: PreparedScan,
    scoring: Mapping,
) -> ScanPrediction:
    """Score a prepared scan's patches as at evaluation; its evidence maps lie on the input
    grid (:class:`EvidenceMaps`)."""
    volume = scan.volume
    grid = spatial_shape(volume)
    size = spec.patch_size if spec.mode == "patch" else max(grid)
    starts = scan_patches(volume, size, scoring["stride"], scoring["min_foreground_fraction"])
    if len(starts) == 0:
        raise ValueError(
            "no patch holds enough head (evaluation.scan_scoring.min_foreground_fraction); "
            "the head may be too small in the field of view"
        )
    size = min(size, *grid)
    patch_embeddings = embed_patches(
        model, volume, starts, size, scoring["batch_size"], scoring["mixed_precision_cpu"]
    )
    probabilities, evidence = scorer.patch_probabilities(patch_embeddings)
    scores, any_lesion = scorer.scan_scores(probabilities, evidence)
    regions = probabilities[next(iter(spec.zero_shot["targets"]))]
    maps = EvidenceMaps(
        values=np.column_stack([evidence, regions]).astype(np.float32),
        starts=np.asarray(starts),
        patch_size=size,
        head=np.packbits(is_foreground(volume)),
        grid_shape=grid,
        grid_affine=np.array(json.loads(scan.report["output_affine"]), dtype=float),
        input_shape=scan.input_shape,
        input_affine=scan.input_affine,
    )
    mean = patch_embeddings.mean(axis=0)
    return ScanPrediction(
        scores=score_columns(spec.zero_shot, scores),
        any_lesion=any_lesion,
        embedding=mean / np.linalg.norm(mean),
        patch_embeddings=patch_embeddings,
        evidence=maps,
        n_patches=len(starts),
    )


def prediction_row(
    scan_id: str, prediction: ScanPrediction, spec: Mapping, threshold: float
) -> dict:
    """``scan_id``, ``prob_<class>`` per class of each target, ``prob_any_lesion``, and the
    predicted classes: ``predicted_<target>`` (regions: every class at >= ``threshold``,
    ";"-joined; other targets: the best-scored class)."""
    columns = probability_columns(spec)
    row = {"scan_id": scan_id, "n_patches": prediction.n_patches,
           "prob_any_lesion": prediction.any_lesion, **prediction.scores}  # fmt: skip
    for name, target in spec["targets"].items():
        values = {value: prediction.scores[columns[(name, value)]] for value in target["classes"]}
        if target["kind"] == "lesion":
            row[f"predicted_{name}"] = ";".join(v for v, p in values.items() if p >= threshold)
        else:
            row[f"predicted_{name}"] = max(values, key=values.get)
    return row


def rank_by_queries(
    model: ClipModel,
    queries: Sequence[str],
    patch_embeddings: Mapping[str, np.ndarray],
    top_k: int,
) -> pd.DataFrame:
    """For each free-text query, the scans ranked by the mean cosine similarity of their
    ``top_k`` most similar patches to it (``query, rank, scan_id, score``)."""
    columns = ["query", "rank", "scan_id", "score"]
    if not queries or not patch_embeddings:
        return pd.DataFrame(columns=columns)
    vectors = embed_texts(model, list(queries)).numpy().astype(np.float64)
    rows = []
    for query, vector in zip(queries, vectors, strict=True):
        scores = {
            scan_id: float(aggregate_patches((patches @ vector)[:, None], "top_k_mean", top_k)[0])
            for scan_id, patches in patch_embeddings.items()
        }
        ranked = sorted(scores.items(), key=lambda item: -item[1])
        rows += [(query, rank, sid, score) for rank, (sid, score) in enumerate(ranked, start=1)]
    return pd.DataFrame(rows, columns=columns)
