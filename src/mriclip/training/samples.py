"""What the alignment loop trains on: (image, sentence) pairs from preprocessed volumes.

Two modes, as a parameter:

- ``patch``: cubes around lesions (as the paper) *and* elsewhere in the head, each described
  by exactly the lesions inside it, including none, so the model learns what a lesion looks
  like and not only where cubes sit in the head (see :class:`AlignmentSamples`).
- ``volume``: the whole preprocessed volume with its scan's sentence (lesion counts kept).

Sentences are drawn with random paraphrases; ``content`` is the canonical sentence, which
label-aware losses use to avoid treating pairs that say the same thing as negatives. Every
random choice of an item (cube, augmentation, paraphrase) comes from (seed, epoch, index)
(see ``rng.item_rng``), so data-loading workers and resumed runs make the same items.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from mriclip.imaging.lesion_table import CENTRE_COLUMNS
from mriclip.imaging.position import with_position
from mriclip.models.mae import apply_mask, block_mask
from mriclip.text.templates import SentenceTemplates, describe_patch, describe_scan
from mriclip.training.batching import ItemKey
from mriclip.training.rng import item_rng

MODES = ("patch", "volume")
# Attempts at a patch centre in the head, or at a cube that cuts no lesion, before the last
# draw is taken as it is.
_MAX_DRAWS = 20


def spatial_shape(volume: np.ndarray) -> tuple[int, int, int]:
    """The grid of a volume (X, Y, Z) or of a channel stack (C, X, Y, Z): its last three axes."""
    return tuple(volume.shape[-3:])


def volume_channels(volume: np.ndarray) -> int:
    """Image channels of a preprocessed volume: 1, or the sequences of a channel stack."""
    return 1 if volume.ndim == 3 else volume.shape[0]


def with_channels(image: np.ndarray) -> torch.Tensor:
    """A volume or cube as a (C, X, Y, Z) tensor: a single sequence gets its channel axis."""
    tensor = torch.from_numpy(np.ascontiguousarray(image))
    return tensor if image.ndim == 4 else tensor[None]


def stack_channels(
    volumes: Mapping[str, Callable[[], np.ndarray] | np.ndarray], scan_ids: Sequence[str]
) -> int:
    """Image channels of a collection of preprocessed volumes (one preprocessing made them
    all alike): what an encoder's ``in_channels`` must be. Only the first of ``scan_ids`` is
    read, so a caller that must not touch test scans names the scans it may read."""
    if not volumes or not len(scan_ids):
        raise ValueError("no preprocessed volumes; run the data_engineering pipeline first")
    first = volumes[scan_ids[0]]
    return volume_channels(np.asarray(first() if callable(first) else first))


def reference_channel(volume: np.ndarray) -> np.ndarray:
    """What figures show of a volume: itself, or a stack's first (reference) sequence."""
    return volume if volume.ndim == 3 else volume[0]


def is_foreground(volume: np.ndarray) -> np.ndarray:
    """The head on the grid: background is exactly 0 after preprocessing, in every channel."""
    return volume != 0 if volume.ndim == 3 else (volume != 0).any(axis=0)


def crop_with_padding(volume: np.ndarray, start: Sequence[int], size: int) -> np.ndarray:
    """The cube ``volume[start : start + size]`` of a volume or a channel stack (the cube keeps
    the channels), zero-padded where it leaves the volume.

    Reads only the cube from a memory-mapped array."""
    out = np.zeros((*volume.shape[:-3], size, size, size), dtype=np.float32)
    source, target = [Ellipsis], [Ellipsis]  # the channels, if any, come whole
    for begin, extent in zip(start, spatial_shape(volume), strict=True):
        lo, hi = min(max(begin, 0), extent), max(min(begin + size, extent), 0)
        if hi <= lo:  # the cube lies wholly outside the volume
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - begin, hi - begin))
    out[tuple(target)] = volume[tuple(source)]
    return out


@dataclass(frozen=True)
class ScanLesions:
    """A scan's lesions as arrays: a training item reads them several times, and indexing a
    pandas table there cost more than cutting the cube."""

    ids: np.ndarray  # label-map values, int64
    n_voxels: np.ndarray  # each lesion's size in the label map
    centres: np.ndarray  # (n, 3) grid coordinates
    regions: np.ndarray  # each lesion's region, object array of str

    @classmethod
    def from_table(cls, lesions: pd.DataFrame) -> ScanLesions:
        """From rows with ``lesion_id``, ``n_voxels``, ``region`` and, where the cube is
        centred on them, ``center_x/y/z``."""
        centres = lesions.reindex(columns=CENTRE_COLUMNS)
        return cls(
            ids=lesions["lesion_id"].to_numpy(dtype=np.int64),
            n_voxels=lesions["n_voxels"].to_numpy(dtype=float),
            centres=centres.to_numpy(dtype=float),
            regions=lesions["region"].to_numpy(dtype=object),
        )

    def __len__(self) -> int:
        return len(self.ids)


def lesions_in_cube(
    label: np.ndarray,
    start: Sequence[int],
    size: int,
    lesions: ScanLesions,
    min_visible_fraction: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Which of ``lesions`` (with the label map's lesion sizes) the cube
    ``label[start : start + size]`` shows: (visible, cut) boolean arrays, a lesion visible with
    at least ``min_visible_fraction`` of its voxels inside, cut with some but fewer."""
    crop = crop_with_padding(label, start, size).astype(np.int64).ravel()
    inside = np.bincount(crop, minlength=int(lesions.ids.max(initial=0)) + 1)[lesions.ids]
    fraction = inside / lesions.n_voxels
    visible = fraction >= min_visible_fraction
    return visible, (fraction > 0) & ~visible


class VolumeSource:
    """Scan id -> volume, from arrays or from loaders (Kedro partitions). A loaded volume is
    kept: memory-mapped arrays cost no RAM, and re-opening a memmap per item costs more than
    reading a training crop from it."""

    def __init__(self, volumes: Mapping[str, Callable[[], np.ndarray] | np.ndarray]) -> None:
        self._volumes, self._opened = volumes, {}

    def __contains__(self, scan_id: str) -> bool:
        return scan_id in self._volumes

    def __getitem__(self, scan_id: str) -> np.ndarray:
        if scan_id not in self._opened:
            item = self._volumes[scan_id]
            self._opened[scan_id] = item() if callable(item) else item
        return self._opened[scan_id]

    def __getstate__(self) -> dict:
        # A worker process started by pickling (macOS, Windows) opens volumes itself: a
        # pickled memmap would be a copy of the whole array.
        return {**self.__dict__, "_opened": {}}


def plain_tensor(image) -> torch.Tensor:
    """A float32 ``torch.Tensor``, not MONAI's ``MetaTensor``: its per-operation metadata
    tracking made training steps several times slower."""
    return convert_to_tensor(image, dtype=torch.float32, track_meta=False)


class AlignmentSamples(Dataset):
    """(image, sentence, key, content) items for the scans in ``scans`` (rows of
    ``scan_sentences``).

    Patch mode needs the preprocessed label maps (``labels``): a fraction
    ``lesion_patch_fraction`` of the patches is a cube around one of the scan's lesions (each
    lesion equally likely, the cube jittered). Of the rest, ``matched_fraction`` are centred
    where a lesion of *another* training scan lies (volumes are on one RAS grid, so that is the
    same place in the head), the others anywhere in the head. Matching matters: cubes around
    lesions sit deep in the brain and random cubes often at its edge, so without it "where the
    cube is" already tells lesion from no lesion, and a model learns that instead of the lesion.
    The sentence describes exactly the lesions inside the cube: those with at least
    ``min_visible_fraction`` of their voxels in it, "no lesion" when there is none. A cube
    that cuts a lesion in between (some voxels in, fewer than that fraction) is redrawn, so no
    sentence is wrong about a half-visible lesion. Lesion-free scans give lesion-free patches.

    ``key`` is the set of regions in the image (";"-joined); ``content`` is the canonical
    sentence (no paraphrase): what the image shows, which label-aware targets compare.

    With ``position_channels`` the image gets its voxels' grid coordinates as three more
    channels (:mod:`mriclip.imaging.position`), after augmentation: they say where the cube was
    cut, which augmentation does not change.

    Alignment methods (:mod:`mriclip.training.methods`) add to training items:
    ``drop_blocks=(ratio, block_size)`` zeroes that fraction of the image's ``block_size``³
    blocks (FLIP; position channels kept); ``views`` (an augmentation) adds ``"views"``, two
    augmentations of the cube, ``(2, C, D, H, W)`` (SLIP). Both draw from the item's own
    generator after everything else, so the cube and sentence are those of a plain item.

    Indexed by an ``(epoch, index)`` key or a plain index (epoch 0, what validation reads):
    the same key always gives the same item.
    """

    def __init__(
        self,
        scans: pd.DataFrame,
        volumes: Mapping[str, Callable[[], np.ndarray] | np.ndarray],
        lesion_table: pd.DataFrame,
        templates: SentenceTemplates,
        mode: str = "patch",
        patch_size: int = 32,
        jitter: float = 0.25,
        augment: Callable[[dict], dict] | None = None,
        paraphrase: bool = True,
        seed: int = 0,
        labels: Mapping[str, Callable[[], np.ndarray] | np.ndarray] | None = None,
        lesion_patch_fraction: float = 0.5,
        min_visible_fraction: float = 0.5,
        patch_columns: Sequence[str] = (),
        matched_fraction: float = 0.8,
        position_channels: bool = False,
        drop_blocks: tuple[float, int] | None = None,
        views: Callable[[dict], dict] | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"alignment.mode must be one of {MODES}, got {mode!r}")
        if not 0 <= lesion_patch_fraction <= 1:
            raise ValueError(
                f"alignment.lesion_patch_fraction must be in [0, 1], got {lesion_patch_fraction}"
            )
        if not 0 <= matched_fraction <= 1:
            raise ValueError(
                f"alignment.matched_fraction must be in [0, 1], got {matched_fraction}"
            )
        if not 0 < min_visible_fraction <= 1:
            raise ValueError(
                f"alignment.min_visible_fraction must be in (0, 1], got {min_visible_fraction}"
            )
        self.scans = scans.reset_index(drop=True)
        missing = sorted(sid for sid in self.scans["scan_id"] if sid not in volumes)
        if missing:
            raise ValueError(
                f"no preprocessed volume for scan(s) {missing[:5]}; "
                "re-run the data_engineering pipeline"
            )
        self._volumes = VolumeSource(volumes)
        self._labels = VolumeSource(labels or {})
        self.templates, self.mode, self.patch_size = templates, mode, patch_size
        self.jitter, self.augment, self.paraphrase = jitter, augment, paraphrase
        self.lesion_patch_fraction = lesion_patch_fraction
        self.min_visible_fraction = min_visible_fraction
        self.patch_columns = tuple(patch_columns)
        self.matched_fraction = matched_fraction
        self.position_channels = position_channels
        self.drop_blocks, self.views = drop_blocks, views
        self.seed = seed
        self.records = [self.scans.iloc[i].to_dict() for i in range(len(self.scans))]
        self.lesions = {
            sid: ScanLesions.from_table(group) for sid, group in lesion_table.groupby("scan_id")
        }
        mine = lesion_table[lesion_table["scan_id"].isin(set(self.scans["scan_id"]))]
        centres = mine.reindex(columns=CENTRE_COLUMNS)  # none in volume mode
        self.lesion_places = centres.dropna().to_numpy(dtype=float)
        if mode == "patch":
            unlabelled = [
                sid
                for sid in self.scans["scan_id"]
                if sid in self.lesions and sid not in self._labels
            ]
            if unlabelled:  # where a lesion lies is known from its label map only
                raise ValueError(
                    f"patch mode: scan(s) {unlabelled[:5]} have lesions but no preprocessed "
                    "label map; add labels/<scan_id>.nii.gz, drop them, or use mode: volume"
                )

    def __len__(self) -> int:
        return len(self.scans)

    def _visible_lesions(self, scan_id: str, start: np.ndarray) -> tuple[list[str], bool]:
        """Regions of the lesions visible in the cube at ``start``, and whether one is cut."""
        if scan_id not in self.lesions:
            return [], False
        lesions = self.lesions[scan_id]
        visible, cut = lesions_in_cube(
            self._labels[scan_id], start, self.patch_size, lesions, self.min_visible_fraction
        )
        return lesions.regions[visible].tolist(), bool(cut.any())

    def _patch_start(
        self, scan_id: str, volume: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray:
        lesions = self.lesions.get(scan_id)
        if lesions is not None and rng.random() < self.lesion_patch_fraction:
            centre = lesions.centres[int(rng.integers(len(lesions)))]
            centre = centre + rng.uniform(-self.jitter, self.jitter, 3) * self.patch_size
        elif len(self.lesion_places) and rng.random() < self.matched_fraction:
            place = self.lesion_places[int(rng.integers(len(self.lesion_places)))]
            centre = place + rng.uniform(-self.jitter, self.jitter, 3) * self.patch_size
        else:  # anywhere in the head: background is exactly 0 after preprocessing
            for _ in range(_MAX_DRAWS):
                centre = rng.integers(0, spatial_shape(volume))
                if np.any(volume[(..., *centre)] != 0):
                    break
        return np.round(np.asarray(centre, dtype=float) - self.patch_size / 2).astype(int)

    def _draw(
        self, scan_id: str, volume: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, list[str]]:
        """A cube start that cuts no lesion (after ``_MAX_DRAWS`` tries, the last one) and the
        regions of the lesions the cube shows."""
        for _ in range(_MAX_DRAWS):
            start = self._patch_start(scan_id, volume, rng)
            regions, cut = self._visible_lesions(scan_id, start)
            if not cut:
                break
        return start, regions

    def __getitem__(self, key: ItemKey) -> dict:
        index, rng = item_rng(self.seed, key)
        record = self.records[index]
        scan_id = record["scan_id"]
        volume = self._volumes[scan_id]
        if self.mode == "patch":
            start, regions = self._draw(scan_id, volume, rng)
            image = crop_with_padding(volume, start, self.patch_size)
        else:
            start, image = (0, 0, 0), np.array(volume, dtype=np.float32)  # writable copy
            regions = scan_lesion_regions(record)
        raw = tensor = with_channels(image)
        if self.augment is not None:
            self.augment.set_random_state(int(rng.integers(2**31)))
            tensor = plain_tensor(self.augment({"image": tensor})["image"])
        if self.position_channels:
            tensor = with_position(tensor, start, spatial_shape(volume))
        paraphrase = rng if self.paraphrase else None
        if self.mode == "patch":
            sentence = describe_patch(
                record, regions, self.templates, self.patch_columns, paraphrase
            )
            content = describe_patch(record, sorted(regions), self.templates, self.patch_columns)
        else:
            sentence = describe_scan(record, regions, self.templates, paraphrase)
            content = describe_scan(record, sorted(regions), self.templates)
        item = {
            "image": tensor.float(),
            "sentence": sentence,
            "key": ";".join(sorted(set(regions))),
            "content": content,
            "scan_id": scan_id,
        }
        if self.drop_blocks is not None:
            ratio, block_size = self.drop_blocks
            generator = torch.Generator().manual_seed(int(rng.integers(2**63)))
            dropped = block_mask(raw.shape[1:], 1, block_size, ratio, generator)
            item["image"] = apply_mask(item["image"][None], dropped, image_channels=len(raw))[0]
        if self.views is not None:
            self.views.set_random_state(int(rng.integers(2**31)))
            views = [plain_tensor(self.views({"image": raw})["image"]) for _ in range(2)]
            if self.position_channels:
                views = [with_position(view, start, spatial_shape(volume)) for view in views]
            item["views"] = torch.stack(views).float()
        return item


def cohort_patch_columns(
    patch_columns: Sequence[str], scans: pd.DataFrame
) -> tuple[list[str], list[str]]:
    """The ``alignment.patch_columns`` that the scan table ``scans`` has, and those it lacks:
    a cohort without e.g. the phantom's ``diagnosis`` column trains its patches on the other
    columns (and the lesions), not on "The diagnosis is unknown." in every sentence."""
    kept = [column for column in patch_columns if column in scans.columns]
    return kept, [column for column in patch_columns if column not in scans.columns]


def cohort_templates(templates: SentenceTemplates, scans: pd.DataFrame) -> SentenceTemplates:
    """``templates`` for the cohort of the scan table ``scans`` (one row per scan, with
    ``n_lesions``): only the columns it has, and nothing said of lesions when it has none at
    all (no lesion information: "no lesion in this section" would be a guess)."""
    describes_lesions = bool(scans["n_lesions"].sum() > 0) if "n_lesions" in scans else False
    return templates.for_cohort(scans.columns, describes_lesions)


def scan_lesion_regions(row: Mapping) -> list[str]:
    """The region of every lesion of a scan row, repeats kept (two parietal lesions: two
    entries), from ``lesion_regions``; rows without it fall back to the distinct ``regions``."""
    for column in ("lesion_regions", "regions"):
        cell = row.get(column)
        if isinstance(cell, str):
            return [region for region in cell.split(";") if region]
    return []


class LesionPatches(Dataset):
    """One cube centred on each lesion (no jitter, no augmentation): the paper's per-lesion
    evaluation. ``key`` is the lesion's own region; the sentence describes that lesion."""

    def __init__(
        self,
        lesions: pd.DataFrame,
        scans: pd.DataFrame,
        volumes: Mapping[str, Callable[[], np.ndarray] | np.ndarray],
        templates: SentenceTemplates,
        patch_size: int,
        position_channels: bool = False,
    ) -> None:
        self.lesions = lesions.reset_index(drop=True)
        self.rows = scans.set_index("scan_id")
        self._volumes = VolumeSource(volumes)
        self.templates, self.patch_size = templates, patch_size
        self.position_channels = position_channels

    def __len__(self) -> int:
        return len(self.lesions)

    def cube_start(self, index: int) -> np.ndarray:
        """The corner of lesion ``index``'s cube on its volume's grid."""
        centre = self.lesions.iloc[index][CENTRE_COLUMNS]
        return np.round(centre.to_numpy(dtype=float) - self.patch_size / 2).astype(int)

    def __getitem__(self, index: int) -> dict:
        lesion = self.lesions.iloc[index]
        volume = self._volumes[lesion["scan_id"]]
        start = self.cube_start(index)
        image = with_channels(crop_with_padding(volume, start, self.patch_size))
        if self.position_channels:
            image = with_position(image, start, spatial_shape(volume))
        row = self.rows.loc[lesion["scan_id"]].to_dict()
        sentence = describe_patch(row, [lesion["region"]], self.templates)
        return {
            "image": image,
            "sentence": sentence,
            "key": lesion["region"],
            "content": sentence,
            "scan_id": lesion["scan_id"],
        }
