"""BIDS datasets built at test time: one from nibabel's real anatomical.nii (read from the
installed package, never copied into the repo) and the phantom cohort written as BIDS."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

ANATOMICAL = Path(nib.__file__).parent / "tests" / "data" / "anatomical.nii"
DERIVATIVE = {
    "Name": "lesion masks",
    "BIDSVersion": "1.9.0",
    "DatasetType": "derivative",
    "GeneratedBy": [{"Name": "manual"}],
}


def write_tsv(path: Path, rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(path, sep="\t", index=False, na_rep="n/a")


def describe(root: Path, name: str) -> None:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": name, "BIDSVersion": "1.9.0"})
    )
    derivatives = root / "derivatives" / "lesions"
    derivatives.mkdir(parents=True, exist_ok=True)
    (derivatives / "dataset_description.json").write_text(json.dumps(DERIVATIVE))


def bids_name(subject: str, session: str | None, suffix: str) -> str:
    return f"sub-{subject}" + (f"_ses-{session}" if session else "") + f"_{suffix}"


def save(root: Path, subject: str, session: str | None, suffix: str, image) -> Path:
    folder = root / f"sub-{subject}" / (f"ses-{session}" if session else "") / "anat"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{bids_name(subject, session, suffix)}.nii.gz"
    nib.save(image, path)
    return path


def lesion_map(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """One ball (id 1) of radius 3 voxels at the volume's centre, on the image's grid."""
    shape = image.shape[:3]
    grid = np.stack(np.meshgrid(*[np.arange(n) for n in shape], indexing="ij"), axis=-1)
    ball = ((grid - (np.array(shape) - 1) / 2) ** 2).sum(-1) <= 9
    return nib.Nifti1Image(ball.astype(np.int16), image.affine)


def nibabel_tree(root: Path) -> None:
    """Real anatomy for every image: sub-01 with two sessions (and sessions.tsv), sub-02 with
    a lesion mask, sub-05/sub-06 plain, sub-03 with a sidecar but no image, sub-04 listed
    only in participants.tsv, sub-07 with an image but no participants.tsv row, and a mask
    of sub-04 that has no image."""
    describe(root, "nibabel anatomy")
    anatomy = nib.load(ANATOMICAL)
    for subject, session in [("01", "1"), ("01", "2"), ("02", None), ("05", None), ("06", None)]:
        save(root, subject, session, "T1w", anatomy)
    save(root, "07", None, "T1w", anatomy)
    save(root / "derivatives" / "lesions", "02", None, "desc-lesion_mask", lesion_map(anatomy))
    save(root / "derivatives" / "lesions", "04", None, "desc-lesion_mask", lesion_map(anatomy))
    sidecar = root / "sub-03" / "anat" / "sub-03_T1w.json"
    sidecar.parent.mkdir(parents=True)
    sidecar.write_text(json.dumps({"RepetitionTime": 2.0}))
    write_tsv(
        root / "participants.tsv",
        [
            {"participant_id": "sub-01", "age": 30, "sex": "F", "regions": None},
            {"participant_id": "sub-02", "age": None, "sex": "M", "regions": "cerebellar"},
            {"participant_id": "sub-03", "age": 50, "sex": "F", "regions": None},
            {"participant_id": "sub-04", "age": 60, "sex": "M", "regions": None},
            {"participant_id": "sub-05", "age": 41, "sex": "F", "regions": "temporal"},
            {"participant_id": "sub-06", "age": 42, "sex": "M", "regions": "occipital"},
        ],
    )
    write_tsv(
        root / "sub-01" / "sub-01_sessions.tsv",
        [
            {"session_id": "ses-1", "age": 30, "regions": "frontal"},
            {"session_id": "ses-2", "age": 31, "regions": "frontal;parietal"},
        ],
    )


def nibabel_tree_without_lesions(root: Path) -> None:
    """What most OpenNeuro datasets are: four subjects' T1w images (nibabel's real anatomy)
    and a participants.tsv of age, sex and group; no lesion masks, no regions column. sub-03's
    age is n/a."""
    describe(root, "nibabel anatomy, no lesions")
    anatomy = nib.load(ANATOMICAL)
    for subject in ("01", "02", "03", "04"):
        save(root, subject, None, "T1w", anatomy)
    write_tsv(
        root / "participants.tsv",
        [
            {"participant_id": "sub-01", "age": 30, "sex": "F", "group": "control"},
            {"participant_id": "sub-02", "age": 64, "sex": "M", "group": "patient"},
            {"participant_id": "sub-03", "age": None, "sex": "F", "group": "patient"},
            {"participant_id": "sub-04", "age": 47, "sex": "M", "group": "control"},
        ],
    )


def phantom_tree(cohort, root: Path) -> pd.DataFrame:
    """The phantom cohort as BIDS (patient -> subject, course -> session; sex and diagnosis
    in participants.tsv, age per session); returns its lesions table with BIDS scan ids."""
    describe(root, "mriclip phantom")
    scans = cohort.scans.set_index("scan_id")
    bids_ids = {}
    for file_name, image in cohort.images.items():
        scan_id = file_name.removesuffix(".nii.gz")
        subject, session = scans.loc[scan_id, "patient_id"], f"S{scans.loc[scan_id, 'course']}"
        save(root, subject, session, "T1w", image)
        save(
            root / "derivatives" / "lesions",
            subject,
            session,
            "desc-lesion_mask",
            cohort.labels[file_name],
        )
        bids_ids[scan_id] = bids_name(subject, session, "T1w").removesuffix("_T1w")
    patients = scans.drop_duplicates("patient_id")
    write_tsv(
        root / "participants.tsv",
        [
            {"participant_id": f"sub-{p}", "sex": s, "diagnosis": d}
            for p, s, d in zip(
                patients["patient_id"], patients["sex"], patients["diagnosis"], strict=True
            )
        ],
    )
    for patient_id, rows in scans.groupby("patient_id"):
        write_tsv(
            root / f"sub-{patient_id}" / f"sub-{patient_id}_sessions.tsv",
            [
                {"session_id": f"ses-S{c}", "age": a}
                for c, a in zip(rows["course"], rows["age"], strict=True)
            ],
        )
    return cohort.lesions.assign(scan_id=cohort.lesions["scan_id"].map(bids_ids))
