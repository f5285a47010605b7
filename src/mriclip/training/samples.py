"""What the alignment loop trains on: (image, sentence) pairs from preprocessed volumes.

Two modes, as a parameter:

- ``patch``: as the paper, a cube around a lesion (lesions drawn in proportion to their
  volume, the cube jittered so the lesion is not always central); the sentence describes
  the scan's row and only the lesions whose centre lies inside the cube.
- ``volume``: the whole preprocessed volume with its scan's sentence.

Sentences are drawn with random paraphrases each time an item is read; ``key`` is the set of
regions in the image, which label-aware losses use to avoid treating pairs that say the
same thing as negatives.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from monai.utils import convert_to_tensor
from torch.utils.data import Dataset

from mriclip.text.templates import SentenceTemplates, describe_scan

MODES = ("patch", "volume")


def crop_with_padding(volume: np.ndarray, start: Sequence[int], size: int) -> np.ndarray:
    """The cube ``volume[start : start + size]``, zero-padded where it leaves the volume.

    Reads only the cube from a memory-mapped array."""
    out = np.zeros((size, size, size), dtype=np.float32)
    source, target = [], []
    for begin, extent in zip(start, volume.shape, strict=True):
        lo, hi = min(max(begin, 0), extent), max(min(begin + size, extent), 0)
        if hi <= lo:  # the cube lies wholly outside the volume
            return out
        source.append(slice(lo, hi))
        target.append(slice(lo - begin, hi - begin))
    out[tuple(target)] = volume[tuple(source)]
    return out


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


def plain_tensor(image) -> torch.Tensor:
    """A float32 ``torch.Tensor``, not MONAI's ``MetaTensor``: its per-operation metadata
    tracking made training steps several times slower."""
    return convert_to_tensor(image, dtype=torch.float32, track_meta=False)


class AlignmentSamples(Dataset):
    """(image, sentence, key) items for the scans in ``scans`` (rows of ``scan_sentences``)."""

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
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"alignment.mode must be one of {MODES}, got {mode!r}")
        self.scans = scans.reset_index(drop=True)
        missing = sorted(sid for sid in self.scans["scan_id"] if sid not in volumes)
        if missing:
            raise ValueError(
                f"no preprocessed volume for scan(s) {missing[:5]}; "
                "re-run the data_engineering pipeline"
            )
        self._volumes = VolumeSource(volumes)
        self.templates, self.mode, self.patch_size = templates, mode, patch_size
        self.jitter, self.augment, self.paraphrase = jitter, augment, paraphrase
        self.rng = np.random.default_rng(seed)
        self.lesions = {sid: group for sid, group in lesion_table.groupby("scan_id")}
        if mode == "patch":
            without = [sid for sid in self.scans["scan_id"] if sid not in self.lesions]
            if without:  # a patch "around a lesion" needs a lesion; listed, not silent
                raise ValueError(
                    f"patch mode: scan(s) {without[:5]} have no lesion in the "
                    "lesion table; use mode: volume or drop them"
                )

    def __len__(self) -> int:
        return len(self.scans)

    def _patch(self, scan_id: str) -> tuple[np.ndarray, list[str]]:
        lesions = self.lesions[scan_id]
        weights = lesions["n_voxels"].to_numpy(dtype=float)
        lesion = lesions.iloc[self.rng.choice(len(lesions), p=weights / weights.sum())]
        centre = lesion[["center_x", "center_y", "center_z"]].to_numpy(dtype=float)
        offset = self.rng.uniform(-self.jitter, self.jitter, 3) * self.patch_size
        start = np.round(centre + offset - self.patch_size / 2).astype(int)
        image = crop_with_padding(self._volumes[scan_id], start, self.patch_size)
        inside = np.all(
            (lesions[["center_x", "center_y", "center_z"]].to_numpy() >= start)
            & (lesions[["center_x", "center_y", "center_z"]].to_numpy() < start + self.patch_size),
            axis=1,
        )
        return image, lesions.loc[inside, "region"].tolist()

    def __getitem__(self, index: int) -> dict:
        row = self.scans.iloc[index]
        scan_id = row["scan_id"]
        if self.mode == "patch":
            image, regions = self._patch(scan_id)
        else:
            image = np.array(self._volumes[scan_id], dtype=np.float32)  # writable copy
            regions = row["regions"].split(";") if isinstance(row["regions"], str) else []
        tensor = torch.from_numpy(np.ascontiguousarray(image))[None]
        if self.augment is not None:
            # Seeded from the dataset's own generator, which checkpoints save: resume replays it.
            self.augment.set_random_state(int(self.rng.integers(2**31)))
            tensor = plain_tensor(self.augment({"image": tensor})["image"])
        rng = self.rng if self.paraphrase else None
        return {
            "image": tensor.float(),
            "sentence": describe_scan(row.to_dict(), regions, self.templates, rng),
            "key": ";".join(sorted(set(regions))),
            "scan_id": scan_id,
        }


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
    ) -> None:
        self.lesions = lesions.reset_index(drop=True)
        self.rows = scans.set_index("scan_id")
        self._volumes = VolumeSource(volumes)
        self.templates, self.patch_size = templates, patch_size
        self.rng = np.random.default_rng(0)  # unused: items are deterministic

    def __len__(self) -> int:
        return len(self.lesions)

    def __getitem__(self, index: int) -> dict:
        lesion = self.lesions.iloc[index]
        centre = lesion[["center_x", "center_y", "center_z"]].to_numpy(dtype=float)
        start = np.round(centre - self.patch_size / 2).astype(int)
        volume = self._volumes[lesion["scan_id"]]
        image = crop_with_padding(volume, start, self.patch_size)
        row = self.rows.loc[lesion["scan_id"]].to_dict()
        return {
            "image": torch.from_numpy(image)[None],
            "sentence": describe_scan(row, [lesion["region"]], self.templates),
            "key": lesion["region"],
            "scan_id": lesion["scan_id"],
        }
