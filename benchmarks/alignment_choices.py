"""Which alignment settings let the image tower see lesions: loss, pooling, augmentation.

Trains the CPU default image encoder against the locked text tower on the preprocessed phantom
(after ``kedro run``: data/05_model_input, data/03_primary) for each variant, same seed and
steps, and prints two zero-shot figures on the test split:

- ``detection``: AUC of 1 - p(no lesion) (softmax over the region prompts and the no-lesion
  prompt) for cubes drawn as in training, lesion vs none;
- ``region``: macro AUC of the softmax over region prompts for a cube centred on each test
  lesion (the paper's lesion-level protocol).

Each variant changes one or two things from the first; "no position channels" leaves out
the three input channels with each voxel's grid coordinates (mriclip.imaging.position), which
tell the encoder where in the head a cube lies. Figures from one seed on ~34 test lesions
are noisy (intervals of about +-0.1 on ``region``); read large differences only.

    python benchmarks/alignment_choices.py [--steps 800]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from mriclip.evaluation.rank_metrics import roc_auc
from mriclip.imaging.augmentation import AugmentationConfig, full_augmentation
from mriclip.models.checkpoints import build_encoder_from_saved
from mriclip.models.encoders import build_image_encoder
from mriclip.models.factory import create_clip_model, embed_texts
from mriclip.splits import in_split
from mriclip.text.templates import SentenceTemplates
from mriclip.training.alignment import AlignmentConfig, train_alignment
from mriclip.training.engine import configs_from_params
from mriclip.training.methods import AlignmentMethod
from mriclip.training.samples import AlignmentSamples, LesionPatches

DATA = Path("data")
REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]
AUGMENTATION = {  # the former CPU default
    "rotation_prob": 0.2, "scale_prob": 0.2, "additive_noise_prob": 0.2,
    "multiplicative_noise_prob": 0.2, "blur_prob": 0.1, "bias_field_prob": 0.2,
    "gamma_prob": 0.2,
}  # fmt: skip
VARIANTS = {
    "default (siglip, max pooling, position channels, pretrained)": {},
    "clip loss": {"loss": "clip", "tau": 0.07},
    "random init": {"init": "random"},
    "random init, no position channels": {"init": "random", "position": False},
    "random init, mean_max pooling": {"init": "random", "pooling": "mean_max"},
    "augmentation (spatial + intensity)": {"augmentation": AUGMENTATION},
    "augmentation (intensity only)": {
        "augmentation": {**AUGMENTATION, "rotation_prob": 0.0, "scale_prob": 0.0}
    },
}


def load_arrays(folder: Path) -> dict[str, np.ndarray]:
    return {path.stem: np.load(path, mmap_mode="r") for path in sorted(folder.glob("*.npy"))}


def latest(path: Path) -> Path:
    return sorted(path.glob("*/" + path.name))[-1] if path.is_dir() else path


def run_variant(variant: dict, steps: int, data: dict, params: dict) -> dict:
    torch.manual_seed(0)
    alignment = params["alignment"]
    templates = SentenceTemplates.from_params(params["sentences"])
    train, test = data["train"], data["test"]
    augment = None
    if "augmentation" in variant:
        augment = full_augmentation(AugmentationConfig(**variant["augmentation"]), ["image"], 0)
    sampling = {
        "labels": data["labels"],
        "patch_columns": alignment["patch_columns"],
        "patch_size": alignment["patch_size"],
        "lesion_patch_fraction": alignment["lesion_patch_fraction"],
        "matched_fraction": alignment["matched_fraction"],
    }
    positioned = variant.get("position", True)
    sampling["position_channels"] = positioned
    train_set = AlignmentSamples(
        train, data["volumes"], data["lesions"], templates, seed=0, augment=augment, **sampling
    )
    test_set = AlignmentSamples(
        test, data["volumes"], data["lesions"], templates, seed=1, paraphrase=False, **sampling
    )
    cubes = [test_set[divmod(i, len(test_set))] for i in range(400)]  # (epoch, index) keys
    cube_images = torch.stack([cube["image"] for cube in cubes])
    has_lesion = np.array([cube["key"] != "" for cube in cubes])
    lesions = data["lesions"][data["lesions"]["scan_id"].isin(set(test["scan_id"]))]
    centred = LesionPatches(
        lesions, test, data["volumes"], templates, alignment["patch_size"], positioned
    )
    centred_images = torch.stack([centred[i]["image"] for i in range(len(centred))])
    lesion_regions = np.array([centred[i]["key"] for i in range(len(centred))])

    kwargs = dict(params["image_encoder_kwargs"], pooling=variant.get("pooling", "max"))
    kwargs["position_channels"] = positioned
    if variant.get("init", "pretrained") == "pretrained":
        saved = torch.load(latest(DATA / "06_models/pretrained_encoder.pt"), weights_only=True)
        saved["config"]["pooling"] = kwargs["pooling"]
        encoder = build_encoder_from_saved(saved)
    else:
        encoder = build_image_encoder(params["image_encoder_name"], **kwargs)
    clip = dict(alignment["clip"], loss=variant.get("loss", "siglip"))
    clip["init_temperature"] = variant.get("tau", 0.1)
    model = create_clip_model(encoder, alignment["text_encoder"], clip)
    # The pipeline's loop and settings (locked text tower included), without validation.
    configs = configs_from_params(
        {**alignment["training"], "steps": steps, "val_every": steps, "keep": "last",
         "checkpoint_every": steps, "checkpoint_dir": None},
        AlignmentConfig, 0, "alignment.training",
    )  # fmt: skip
    prompts = [f"There is a lesion in the {region} section." for region in REGIONS]
    prompts.append(templates.no_lesion_in_patch[0])
    start = time.perf_counter()
    model, _ = train_alignment(
        model, train_set, None, *configs, AlignmentMethod.from_params(alignment)
    )
    seconds = time.perf_counter() - start
    model.eval()
    with torch.no_grad():
        texts = embed_texts(model, prompts)
        scale = model.logit_scale
        cube_p = torch.softmax(scale * model.encode_image(cube_images) @ texts.T, dim=1)
        region_p = torch.softmax(scale * model.encode_image(centred_images) @ texts[:-1].T, 1)
    region_aucs = [
        roc_auc(lesion_regions == region, region_p[:, k].numpy())
        for k, region in enumerate(REGIONS)
        if 0 < (lesion_regions == region).sum() < len(lesion_regions)
    ]
    return {
        "detection": roc_auc(has_lesion, 1 - cube_p[:, -1].numpy()),
        "region": float(np.mean(region_aucs)),
        "s_per_step": seconds / steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=800)
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    conf = Path("conf/base")
    params = {
        **yaml.safe_load((conf / "parameters.yml").read_text()),
        **yaml.safe_load((conf / "parameters_alignment.yml").read_text()),
    }
    encoder = yaml.safe_load((conf / "globals.yml").read_text())["image_encoder"]
    params["image_encoder_name"], params["image_encoder_kwargs"] = (
        encoder["name"],
        encoder["kwargs"],
    )
    splits = pd.read_csv(DATA / "03_primary/splits.csv")
    sentences = pd.read_csv(DATA / "03_primary/scan_sentences.csv")
    data = {
        "volumes": load_arrays(DATA / "05_model_input/volumes"),
        "labels": load_arrays(DATA / "05_model_input/labels"),
        "lesions": pd.read_csv(DATA / "03_primary/lesion_table.csv"),
    }
    for split in ("train", "test"):
        ids = set(in_split(splits, split)["scan_id"])
        data[split] = sentences[sentences["scan_id"].isin(ids)]
    print(f"{args.steps} steps, batch {params['alignment']['training']['micro_batch_size']}")
    print(f"{'variant':<60} {'detection':>9} {'region':>7} {'s/step':>7}")
    for name, variant in VARIANTS.items():
        result = run_variant(variant, args.steps, data, params)
        print(
            f"{name:<60} {result['detection']:9.3f} {result['region']:7.3f} "
            f"{result['s_per_step']:7.3f}",
            flush=True,
        )


if __name__ == "__main__":
    main()
