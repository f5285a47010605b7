"""Can the alignment's image encoder learn lesion vs no lesion at all? A supervised control.

The default CPU encoder (resnet, 8 filters, 4 levels, max pooling, position channels), fresh
weights, is trained with a binary cross-entropy head on the alignment's kind of 16³ cubes of a
finished run folder's preprocessed training scans: half centred near a lesion (jitter 0.25),
half centred where some training scan has a lesion and showing none; cubes that cut a lesion
are drawn again. Its AUC on 600 such cubes of the test scans is printed every ``--every``
steps. If this learns what contrastive alignment does not (benchmarks/lesion_visibility.py
says the signal is there), the alignment's objective is what fails, not the encoder.

    python benchmarks/lesion_probe.py /tmp/mriclip-difficulty/contrast-0.5 [--steps 2000]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score

from mriclip.imaging.position import with_position
from mriclip.models.encoders import build_image_encoder
from mriclip.training.samples import ScanLesions, crop_with_padding, lesions_in_cube

SIZE = 16


class Cubes:
    """Lesion and matched lesion-free cubes of a run folder's preprocessed scans."""

    def __init__(self, folder: Path, rng: np.random.Generator) -> None:
        data = folder / "data"
        self.lesions = pd.read_csv(data / "03_primary/lesion_table.csv")
        splits = pd.read_csv(data / "03_primary/splits.csv")
        cache = data / "02_intermediate/preprocessing_cache"
        self.volumes, self.labels = {}, {}
        for scan_id in splits["scan_id"]:
            volume, label = (np.load(cache / scan_id / f"{n}.npy") for n in ("volume", "label"))
            self.volumes[scan_id] = volume[0] if volume.ndim == 4 else volume
            self.labels[scan_id] = label[0] if label.ndim == 4 else label
        self.groups = dict(tuple(self.lesions.groupby("scan_id")))
        self.arrays = {scan: ScanLesions.from_table(rows) for scan, rows in self.groups.items()}
        self.split = {name: list(rows["scan_id"]) for name, rows in splits.groupby("split")}
        train = self.lesions[self.lesions["scan_id"].isin(self.split["train"])]
        self.places = train[["center_x", "center_y", "center_z"]].to_numpy(dtype=float)
        self.rng = rng

    def item(self, scan_id: str, lesion: bool) -> tuple[torch.Tensor, float]:
        rng, group = self.rng, self.groups.get(scan_id)
        for _ in range(20):
            if lesion and group is not None:
                row = group.iloc[int(rng.integers(len(group)))]
                centre = row[["center_x", "center_y", "center_z"]].to_numpy(dtype=float)
            else:
                centre = self.places[int(rng.integers(len(self.places)))]
            start = np.round(centre + rng.uniform(-0.25, 0.25, 3) * SIZE - SIZE / 2).astype(int)
            shown, cut = (
                lesions_in_cube(self.labels[scan_id], start, SIZE, self.arrays[scan_id], 0.5)
                if group is not None
                else (np.zeros(0, bool), np.zeros(0, bool))
            )
            if not cut.any() and bool(shown.any()) == (lesion and group is not None):
                break
        cube = crop_with_padding(self.volumes[scan_id], start, SIZE)[None].astype(np.float32)
        image = with_position(torch.from_numpy(cube), start, self.volumes[scan_id].shape)
        return image, float(shown.any())

    def batch(self, split: str, n: int) -> tuple[torch.Tensor, np.ndarray]:
        scans = self.split[split]
        items = [
            self.item(scans[int(self.rng.integers(len(scans)))], self.rng.random() < 0.5)
            for _ in range(n)
        ]
        return torch.stack([image for image, _ in items]), np.array([y for _, y in items])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--every", type=int, default=250)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    cubes = Cubes(args.folder, np.random.default_rng(args.seed))
    encoder = build_image_encoder(
        "resnet", filters=8, levels=4, subunits=1, pooling="max", position_channels=True
    )
    head = torch.nn.Linear(encoder.map_channels, 1)
    parameters = [*encoder.parameters(), *head.parameters()]
    optimiser = torch.optim.AdamW(parameters, lr=args.lr, weight_decay=0.01)
    test_images, test_labels = cubes.batch("test", 600)
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        images, labels = cubes.batch("train", 16)
        encoder.train()
        logits = head(encoder(images))[:, 0]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            logits, torch.from_numpy(labels).float()
        )
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        if step % args.every == 0:
            encoder.eval()
            with torch.no_grad():
                scores = torch.cat([head(encoder(chunk))[:, 0] for chunk in test_images.split(100)])
            auc = roc_auc_score(test_labels, scores.numpy())
            print(f"step {step}: test AUC {auc:.3f} ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
