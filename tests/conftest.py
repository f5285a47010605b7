"""Shared fixtures: a tiny synthetic raw cohort in the user data contract; conf/base's
training and preprocessing parameters."""

from __future__ import annotations

import itertools
from functools import partial
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from mriclip.training.batching import BatchStream, batch_loader
from mriclip.training.methods import AlignmentMethod

BASE_CONF = Path(__file__).resolve().parents[1] / "conf" / "base"
REGIONS = ["frontal", "parietal", "temporal", "occipital", "cerebellar"]


@pytest.fixture(autouse=True)
def no_mlflow_run_left_open():
    """With the mlflow extra, kedro-mlflow opens a run per Kedro session; one a test leaves
    active would swallow the next session's logging (and clash on its parameters)."""
    yield
    end_mlflow_runs()


def end_mlflow_runs() -> None:
    try:
        import mlflow
    except ImportError:
        return
    while mlflow.active_run() is not None:
        mlflow.end_run()


def training_params(pipeline: str, **changes) -> dict:
    """conf/base's ``<pipeline>.training`` parameters (every key, at its default), changed."""
    parameters = yaml.safe_load((BASE_CONF / f"parameters_{pipeline}.yml").read_text())
    return {**parameters[pipeline]["training"], **changes}


def preprocessing_config(**changes):
    """conf/base's ``data_engineering.preprocessing`` (every key, at its default), changed."""
    from mriclip.imaging.preprocessing import PreprocessingConfig

    parameters = yaml.safe_load((BASE_CONF / "parameters_data_engineering.yml").read_text())
    return PreprocessingConfig(**{**parameters["data_engineering"]["preprocessing"], **changes})


def alignment_method(name: str, **changes) -> AlignmentMethod:
    """conf/base's alignment method parameters with ``method: name``; ``changes`` replace
    whole entries (e.g. ``flip={...}``)."""
    parameters = yaml.safe_load((BASE_CONF / "parameters_alignment.yml").read_text())
    return AlignmentMethod.from_params({**parameters["alignment"], "method": name, **changes})


def first_batches(dataset, workers: int, n: int = 8) -> list[dict]:
    """The first ``n`` batches (of 2 items) the training loop's loader reads from
    ``dataset`` with ``workers`` data workers."""
    stream = BatchStream(len(dataset), 2, seed=0)
    return list(itertools.islice(batch_loader(dataset, stream, workers, False, 0), n))


def crashing_in_epoch(dataset_class: type) -> type:
    """``dataset_class`` whose items of epoch ``crash_epoch`` raise: a crash mid-training, in
    whichever process (training or data worker) reads them."""

    class Crashing(dataset_class):
        def __init__(self, *args, crash_epoch: int, **kwargs):
            super().__init__(*args, **kwargs)
            self.crash_epoch = crash_epoch

        def __getitem__(self, key):
            if isinstance(key, tuple) and key[0] == self.crash_epoch:
                raise RuntimeError("simulated crash")
            return super().__getitem__(key)

    return Crashing


def make_head(
    shape=(40, 48, 40), seed=0, lesions=((20, 24, 20, 3),)
) -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid 'head' with noise, and a label map with one ball per lesion (id 1, 2, ...)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    centre = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.4
    head = (((grid - centre) / radii) ** 2).sum(-1) <= 1
    volume = np.where(head, 100.0, 0.0) + rng.normal(0, 2, shape)
    label = np.zeros(shape, np.int16)
    for lesion_id, (x, y, z, r) in enumerate(lesions, start=1):
        ball = ((grid - np.array([x, y, z])) ** 2).sum(-1) <= r**2
        label[ball] = lesion_id
        volume[ball] = 180.0
    return volume.astype(np.float32), label


def _loaded(image: nib.Nifti1Image) -> nib.Nifti1Image:
    return image


def make_raw_cohort(patients: list[str]):
    """One scan per entry of ``patients`` (repeat a patient for several courses): loaders,
    scans and lesions tables in the data contract, two lesions per scan. The loaders pickle,
    as a catalog's do, so preprocessing workers in other processes can call them."""
    images, labels, scans, lesions = {}, {}, [], []
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    for index, patient_id in enumerate(patients):
        scan_id = f"S{index}"
        volume, label = make_head(seed=index, lesions=((20, 24, 20, 3), (12, 14, 22, 2)))
        image = nib.Nifti1Image(volume, affine)
        label_image = nib.Nifti1Image(label, affine)
        images[f"{scan_id}.nii.gz"] = partial(_loaded, image)
        labels[f"{scan_id}.nii.gz"] = partial(_loaded, label_image)
        scans.append(
            {"scan_id": scan_id, "patient_id": patient_id, "age": 40 + index, "sex": "female"}
        )
        lesions.append({"scan_id": scan_id, "lesion_id": 1, "region": REGIONS[index % 5]})
        lesions.append({"scan_id": scan_id, "lesion_id": 2, "region": REGIONS[(index + 2) % 5]})
    return images, labels, pd.DataFrame(scans), pd.DataFrame(lesions)


@pytest.fixture
def raw_cohort():
    """Six scans of five patients (P0 has two courses)."""
    return make_raw_cohort(["P0", "P0", "P1", "P2", "P3", "P4"])
