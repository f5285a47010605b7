"""``Predictor``: a trained model applied to new scans, in the project or anywhere else.

The one code path from scans to predictions. The inference pipeline builds it from the
``clip_model`` bundle and the evaluation's scoring settings (:meth:`Predictor.from_bundle`);
``mriclip predict`` and Python users from an export folder (:meth:`Predictor.from_export`).
Either way scans are validated by the model's data contract
(:func:`mriclip.imaging.validation.build_unlabelled_catalog`), preprocessed as its training
volumes were and scored patch by patch (:mod:`mriclip.inference`)::

    from mriclip import Predictor

    predictor = Predictor.from_export("data/06_models/export")
    predictions = predictor.predict(["scan.nii.gz", "dicom/series_folder"])
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

import nibabel as nib
import pandas as pd

from mriclip.evaluation.calibration import calibrate_scores
from mriclip.imaging.collection import scan_source
from mriclip.imaging.preprocessing import warm_up
from mriclip.imaging.problems import ProblemLog
from mriclip.imaging.scan_inputs import UnusableInput, scan_inputs
from mriclip.imaging.validation import build_unlabelled_catalog
from mriclip.inference import (
    ScanPrediction,
    build_scorer,
    inference_spec,
    predict_scan,
    prediction_row,
    prepare_scan,
    rank_by_queries,
)
from mriclip.made_ahead import MadeAhead
from mriclip.parallel import TimeLimitExceeded, map_as_completed

logger = logging.getLogger(__name__)


@dataclass
class Predictions:
    """What a :meth:`Predictor.run` gives: one table row per predicted scan, and every input
    left out with the reason."""

    predictions: pd.DataFrame  # the columns of the scan_predictions catalog entry
    embeddings: pd.DataFrame  # scan_id, image_0 ... (the mean patch embedding, renormalised)
    queries: pd.DataFrame  # query, rank, scan_id, score
    #: <scan_id>.nii.gz -> its maps, made when called (:class:`mriclip.inference.EvidenceMaps`;
    #: with workers, :class:`mriclip.made_ahead.MadeAhead` makes the next ones meanwhile)
    evidence_maps: Mapping[str, Callable[[], nib.Nifti1Image]] = field(default_factory=dict)
    problems: pd.DataFrame = field(default_factory=lambda: ProblemLog("inference").table())


class Predictor:
    """A trained mriclip model that predicts, embeds, ranks and maps new scans.

    Args:
        model: the ``ClipModel`` (eval mode).
        settings: the bundle's JSON settings: ``config`` and ``inference`` (preprocessing,
            sequences, patch size, zero-shot targets) and any further entries.
        scoring: ``{"scan_scoring": ..., "prompts": ...}``, as in the ``evaluation``
            parameters: patch stride, aggregation, threshold, prompt ensembling.
        device: ``auto`` (CUDA, then MPS, then CPU) or a torch device string.
        scan_timeout_s: a scan's reading and preprocessing run in a process of its own,
            ended after this many seconds, and the scan is listed (:func:`mriclip.parallel.
            map_as_completed`); None: no limit.
        workers: scans read and preprocessed at once, in processes of their own, while this
            one scores those already done, and evidence maps made ahead while one is written
            (:class:`mriclip.made_ahead.MadeAhead`); 1 with no time limit: all in this process.

    Raises:
        mriclip.inference.IncompatibleBundleError: the settings ask for preprocessing that
            cannot be reproduced here.
    """

    def __init__(
        self,
        model,
        settings: Mapping,
        scoring: Mapping,
        device: str = "auto",
        scan_timeout_s: float | None = None,
        workers: int = 1,
    ) -> None:
        from mriclip.training.runtime import pick_device

        if workers < 1:
            raise ValueError(f"inference workers must be 1 or more, got {workers}")
        self.settings, self.scan_timeout_s, self.workers = settings, scan_timeout_s, workers
        self.spec = inference_spec(settings)  # refuses what it cannot reproduce, saying why
        # Models exported before scoring had a precision setting were scored in float32.
        self.scan_scoring = {"mixed_precision_cpu": False, **scoring["scan_scoring"]}
        self.model = model.to(pick_device(device)).eval()
        self.scorer = build_scorer(self.model, self.spec.zero_shot, self.scan_scoring,
                                   scoring["prompts"])  # fmt: skip

    @classmethod
    def from_bundle(
        cls,
        bundle: Mapping,
        scoring: Mapping,
        device: str = "auto",
        scan_timeout_s: float | None = None,
        workers: int = 1,
    ) -> Predictor:
        """The predictor of a ``clip_model`` bundle (the catalog entry, loaded).

        Args:
            bundle: ``config``, ``state_dict``, ``inference`` and further JSON entries.
            scoring: ``{"scan_scoring": ..., "prompts": ...}`` (the evaluation parameters).
            device, scan_timeout_s, workers: as in the constructor.
        """
        from mriclip.models.factory import load_clip_model

        settings = {key: value for key, value in bundle.items() if key != "state_dict"}
        model = load_clip_model(bundle)
        return cls(model, settings, scoring, device, scan_timeout_s, workers)

    @classmethod
    def from_export(
        cls,
        folder: str | Path,
        device: str = "auto",
        scan_timeout_s: float | None = None,
        workers: int = 1,
    ) -> Predictor:
        """The predictor of an export folder (``kedro run --pipeline export``); reads JSON,
        the tokenizer's files and safetensors only.

        Args:
            folder: the export (``model.safetensors``, ``config.json``, ``tokenizer/``).
            device, scan_timeout_s, workers: as in the constructor.

        Raises:
            mriclip.packaging.export.ExportError: ``folder`` is no readable export.
        """
        from mriclip.packaging.export import load_model, read_config

        config = read_config(folder)
        model = load_model(folder, config)
        return cls(model, config, config["scoring"], device, scan_timeout_s, workers)

    # ------------------------------------------------------------------ the one code path
    def catalog(self, images: Mapping[str, Callable]) -> tuple[pd.DataFrame, pd.DataFrame]:
        """The inference catalog of ``images`` (key -> loader, as a ``ScanImagesDataset``
        loads them) and the problems table: the training data contract's checks."""
        return build_unlabelled_catalog(images, "skip", self.spec.sequences)

    def scan_row(self, scan_id: str, prediction: ScanPrediction) -> dict:
        """A scan's row of ``scan_predictions``: the one place where its ``prob_*`` columns
        are calibrated (the bundle's ``calibration``, fitted on held-out scans) and its
        predicted classes made from them."""
        calibration = (self.settings.get("inference") or {}).get("calibration")
        scores = calibrate_scores(prediction.scores, calibration)
        return prediction_row(scan_id, replace(prediction, scores=scores),
                              self.spec.zero_shot, self.scan_scoring["threshold"])  # fmt: skip

    def run(
        self,
        images: Mapping[str, Callable],
        catalog: pd.DataFrame,
        queries: Sequence[str] = (),
    ) -> Predictions:
        """Predict every usable (``ok``) scan of ``catalog`` (:meth:`catalog`); a scan that
        fails is listed in the problems and the others go on.

        Args:
            images: key -> loader of the scans' files (the catalog's ``image_file``).
            catalog: their inference catalog.
            queries: free texts to rank the scans by.

        Returns:
            The scans' predictions, embeddings, query rankings, evidence maps and problems.
        """
        problems = ProblemLog("inference")
        usable = catalog[catalog["status"] == "ok"]
        files = dict(zip(usable["scan_id"], usable["image_file"], strict=True))
        jobs = {scan.scan_id: (scan_source(scan, images), self.spec.preprocessing)
                for scan in usable.itertuples()}  # fmt: skip
        warm_up(self.spec.preprocessing)  # processes forked for the scans inherit it
        predictions: dict[str, ScanPrediction] = {}
        tick = time.perf_counter()
        # Workers read and preprocess scans (registration is most of a scan's time) while
        # this process scores the ones already prepared.
        prepared = map_as_completed(prepare_scan, jobs, self.workers, None, "inference",
                                    self.scan_timeout_s)  # fmt: skip
        for outcome in prepared:
            try:
                if outcome.error is not None:
                    raise outcome.error
                predictions[outcome.key] = predict_scan(
                    self.model, self.scorer, self.spec, outcome.result, self.scan_scoring
                )
            except TimeLimitExceeded as error:
                problems.add(
                    outcome.key,
                    files[outcome.key],
                    f"preprocessing took too long: {error}",
                    "inspect the scan or remove it; a scan this slow that is fine needs a "
                    "higher inference.scan_timeout_s",
                )
            except Exception as error:  # noqa: BLE001 - one bad scan must not end the run
                problems.add(
                    outcome.key,
                    files[outcome.key],
                    f"inference failed: {type(error).__name__}: {error}",
                    "inspect the scan; it may not be a head MRI or be mostly empty",
                )
        elapsed = time.perf_counter() - tick
        logger.info(
            "inference: %d scans in %.1f s (%.2f scans/s)", len(predictions), elapsed,
            len(predictions) / elapsed if elapsed else float("nan"),
        )  # fmt: skip
        done = [scan_id for scan_id in jobs if scan_id in predictions]  # the catalog's order
        rows = [self.scan_row(scan_id, predictions[scan_id]) for scan_id in done]
        embeddings = [
            {"scan_id": scan_id, **{f"image_{i}": value for i, value in
                                    enumerate(predictions[scan_id].embedding)}}
            for scan_id in done
        ]  # fmt: skip
        patches = {scan_id: predictions[scan_id].patch_embeddings for scan_id in done}
        maps = {f"{scan_id}.nii.gz": predictions[scan_id].evidence for scan_id in done}
        if self.workers > 1:  # the next scans' maps are made while one is written
            maps = MadeAhead(maps, self.workers)
        ranked = rank_by_queries(self.model, list(queries), patches, self.scan_scoring["top_k"])
        return Predictions(pd.DataFrame(rows), pd.DataFrame(embeddings), ranked, maps,
                           problems.table())  # fmt: skip

    # ------------------------------------------------------------------ paths in, tables out
    def run_paths(self, paths: str | Path | Iterable[str | Path], queries: Sequence[str] = ()):
        """:meth:`run` on files and folders: each a NIfTI file, a DICOM series folder, or a
        folder of either (:func:`mriclip.imaging.scan_inputs.scan_inputs`); the problems
        hold the catalog's and the run's."""
        images = gather_inputs(paths)
        catalog, catalog_problems = self.catalog(images)
        result = self.run(images, catalog, queries)
        result.problems = pd.concat([catalog_problems, result.problems], ignore_index=True)
        return result

    def predict(self, paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
        """Per scan: ``scan_id``, ``n_patches``, ``prob_any_lesion``, ``prob_<class>`` of
        every class of every target and ``predicted_<target>``, as ``scan_predictions``.
        Unusable inputs are logged and kept in ``.attrs["problems"]``.

        Args:
            paths: a NIfTI file, a DICOM series folder, a folder of either, or several.

        Returns:
            One row per predicted scan.
        """
        result = self.run_paths(paths)
        result.predictions.attrs["problems"] = result.problems
        return result.predictions

    def embed(self, paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
        """Per scan: ``scan_id`` and its embedding ``image_0`` ... (the mean of its patch
        embeddings, L2-normalised), as ``scan_embeddings``.

        Args:
            paths: as :meth:`predict` takes them.

        Returns:
            One row per embedded scan.
        """
        return self.run_paths(paths).embeddings

    def rank(self, texts: Sequence[str], paths: str | Path | Iterable[str | Path]) -> pd.DataFrame:
        """The scans ranked for each text by the mean cosine similarity of their ``top_k``
        most similar patches (``query, rank, scan_id, score``), as ``query_results``.

        Args:
            texts: free-text queries, e.g. "There is a lesion in the frontal section.".
            paths: as :meth:`predict` takes them.

        Returns:
            One row per (text, scan).
        """
        return self.run_paths(paths, texts).queries

    def evidence_map(self, path: str | Path) -> nib.Nifti1Image:
        """One scan's evidence on its own grid and affine: volume 0 the lesion evidence
        (1 - p(no lesion)), then one probability map per region.

        Args:
            path: a NIfTI file or a DICOM series folder holding one scan.

        Returns:
            A 4D NIfTI image.

        Raises:
            ValueError: the input is not exactly one usable scan (the reason is in the text).
        """
        result = self.run_paths(path)
        if len(result.evidence_maps) != 1:
            reasons = "; ".join(f"{p.item}: {p.problem}" for p in result.problems.itertuples())
            raise ValueError(
                f"{path} gave {len(result.evidence_maps)} predicted scans, not one"
                + (f" ({reasons})" if reasons else "")
            )
        return next(iter(result.evidence_maps.values()))()


def gather_inputs(paths: str | Path | Iterable[str | Path]) -> dict[str, Callable]:
    """Key -> loader of the scans at every path; a key two paths share is listed as unusable
    (two inputs would get one scan id)."""
    if isinstance(paths, (str, Path)):
        paths = [paths]
    images: dict[str, Callable] = {}
    for path in paths:
        for key, load in scan_inputs(path).items():
            if key in images:
                images[key] = UnusableInput(
                    f"two inputs are named {key!r} (in {path} and an earlier path)",
                    "rename one of them: the name is the scan id",
                )
            else:
                images[key] = load
    return images


__all__ = ["Predictions", "Predictor", "gather_inputs"]
