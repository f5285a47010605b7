"""37 corrupted NIfTI files in a phantom cohort: data_engineering (``on_invalid: skip``) and
inference must finish, with every file either usable or listed, none hanging, none crashing.

In a fresh copy of the project (environment ``bench``: a 12-patient phantom on conf/base's
settings, 2 training steps), ``kedro run --pipeline demo_data`` writes the cohort; 37 corrupted
copies of its images join it, each with a scans.csv row of its own patient, and also go to
data/01_raw/inference/images. Then ``data_engineering``, ``pretraining``, ``alignment`` and
``inference`` run as ``kedro run`` processes, each timed whole; the catalogs and problem
tables are read back and every corrupted file is accounted for.

Corruptions: truncated gzip streams, bytes flipped in the header, zero/NaN/negative voxel
sizes, odd shapes, data bytes overwritten at random (float32 and int16 files), extreme and
infinite values, a constant volume, non-NIfTI contents, broken affines.

    python benchmarks/corrupted_files.py [--keep FOLDER]
"""

from __future__ import annotations

import argparse
import gzip
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).parent))
from data_engineering_rerun import copy_project, kedro_run  # noqa: E402

BENCH = {
    "parameters_demo_data.yml": "demo_data:\n  n_patients: 12\n  n_scans: null\n",
    "parameters_pretraining.yml": (
        "pretraining:\n  training: {steps: 2, warmup_steps: 1, val_every: 1, checkpoint_every: 1}\n"
    ),
    "parameters_alignment.yml": (
        "alignment:\n  training: {steps: 2, warmup_steps: 1, val_every: 1, checkpoint_every: 1}\n"
    ),
}


def _raw(path: Path) -> bytearray:
    return bytearray(gzip.decompress(path.read_bytes()))


def _write_raw(path: Path, raw: bytes) -> None:
    path.write_bytes(gzip.compress(bytes(raw), compresslevel=1))


def _image(source: Path, change: Callable[[np.ndarray], np.ndarray], dtype=np.float32):
    image = nib.load(source)
    data = change(np.asarray(image.dataobj).astype(dtype))
    return nib.Nifti1Image(data, image.affine)


def corruptions(sources: list[Path], rng: np.random.Generator) -> dict[str, Callable[[Path], None]]:
    """37 ways to write a corrupted file (name -> writer of that file)."""
    a, b, c = sources[:3]
    cases: dict[str, Callable[[Path], None]] = {}
    for fraction in (0.01, 0.3, 0.6, 0.9, 0.999):
        cases[f"truncated_{fraction}"] = lambda p, f=fraction: p.write_bytes(
            a.read_bytes()[: int(len(a.read_bytes()) * f)]
        )

    def flip_header(path: Path, seed: int) -> None:
        raw, generator = _raw(b), np.random.default_rng(seed)
        for position in generator.integers(0, 348, 8):
            raw[position] = int(generator.integers(0, 256))
        _write_raw(path, raw)

    for seed in range(6):
        cases[f"header_flipped_{seed}"] = lambda p, s=seed: flip_header(p, s)

    def patch_header(path: Path, **fields) -> None:
        """A copy of ``b`` with header fields set in its bytes (nibabel refuses to write
        some of these values)."""
        raw = _raw(b)
        header = nib.Nifti1Header(bytes(raw[:348]), check=False)
        for field, value in fields.items():
            header[field] = value
        raw[:348] = header.binaryblock
        _write_raw(path, raw)

    pixdim = nib.load(b).header["pixdim"].copy()
    for name, zooms in (("zero", (0.0, 2.0, 2.0)), ("nan", (np.nan, 2.0, 2.0))):
        cases[f"{name}_spacing"] = lambda p, z=zooms: patch_header(
            p, pixdim=[pixdim[0], *z, *pixdim[4:]], sform_code=0, qform_code=0
        )
    for name, row in (
        ("negative_spacing_affine", [-2.0, 0.0, 0.0, 90.0]),
        ("zero_spacing_affine", [0.0, 0.0, 0.0, 90.0]),
    ):
        cases[name] = lambda p, r=row: patch_header(p, srow_x=r, sform_code=1, qform_code=0)
    shapes = {
        "shape_2d": lambda d: d[:, :, d.shape[2] // 2],
        "shape_4d": lambda d: np.stack([d, d], -1),
        "shape_slab": lambda d: d[:, :, 40:41],
        "shape_tiny": lambda d: d[:3, :3, :3],
        "shape_line": lambda d: d[:, 40:41, 40:41],
    }
    for name, change in shapes.items():
        cases[name] = lambda p, f=change: nib.save(_image(a, f), p)

    def flip_data(path: Path, source: Path, seed: int, n_bytes: int) -> None:
        raw, generator = _raw(source), np.random.default_rng(seed)
        offset = int(nib.load(source).header["vox_offset"])
        for position in generator.integers(offset, len(raw), n_bytes):
            raw[position] = int(generator.integers(0, 256))
        _write_raw(path, raw)

    float_source = next((s for s in sources if nib.load(s).get_data_dtype() == np.float32), c)
    int_source = next((s for s in sources if nib.load(s).get_data_dtype() != np.float32), c)
    for seed, n_bytes in enumerate((16, 256, 4096, 65536)):
        cases[f"data_flipped_float_{n_bytes}"] = lambda p, s=seed, n=n_bytes: flip_data(
            p, float_source, s, n
        )
        cases[f"data_flipped_int_{n_bytes}"] = lambda p, s=seed, n=n_bytes: flip_data(
            p, int_source, s, n
        )

    def extreme(data):
        data[30:34, 30:34, 30:34] = 3.0e30
        return data

    def infinite(data):
        data[30, 30, 30] = np.inf
        return data

    cases["extreme_values"] = lambda p: nib.save(_image(a, extreme), p)
    cases["infinite_value"] = lambda p: nib.save(_image(a, infinite), p)
    cases["constant_zero"] = lambda p: nib.save(_image(a, np.zeros_like), p)
    cases["text_not_nifti"] = lambda p: p.write_bytes(gzip.compress(b"scan_id,age\nx,1\n"))
    cases["empty_file"] = lambda p: p.write_bytes(b"")

    def header_field(path: Path, field: str, value) -> None:
        image = nib.load(b)
        out = nib.Nifti1Image(np.asarray(image.dataobj), image.affine, image.header.copy())
        out.header[field] = value
        raw = (
            bytearray(out.header.binaryblock)
            + bytearray(4)
            + np.asarray(image.dataobj).astype(image.get_data_dtype()).tobytes("F")
        )
        _write_raw(path, raw)

    cases["wrong_datatype_code"] = lambda p: header_field(p, "datatype", 1024)
    cases["dims_larger_than_data"] = lambda p: header_field(
        p, "dim", [3, 400, 400, 400, 1, 1, 1, 1]
    )

    cases["nan_affine"] = lambda p: patch_header(
        p, srow_x=[np.nan] * 4, srow_y=[np.nan] * 4, sform_code=1, qform_code=0
    )
    cases["singular_affine"] = lambda p: patch_header(
        p, srow_x=[0.0] * 4, srow_y=[0.0] * 4, srow_z=[0.0] * 4, sform_code=1, qform_code=0
    )
    assert len(cases) == 37, len(cases)
    return cases


def account(names: list[str], catalog: pd.DataFrame, problems: pd.DataFrame) -> pd.DataFrame:
    """Per corrupted file: ok (usable), or the stage and problem that list it."""
    rows = []
    for name in names:
        listed = problems[
            (problems["scan_id"].astype(str) == name)
            | (problems["item"].astype(str) == f"{name}.nii.gz")
        ]
        status = catalog.set_index("scan_id")["status"].get(name, "not in the catalog")
        if len(listed):
            first = listed.iloc[0]
            rows.append({"file": name, "outcome": first["stage"], "problem": first["problem"]})
        else:
            rows.append({"file": name, "outcome": "ok" if status == "ok" else "UNLISTED",
                         "problem": "" if status == "ok" else status})  # fmt: skip
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keep", type=Path, help="run in this folder and keep it")
    arguments = parser.parse_args()
    print(
        f"CPU cores available: {len(os.sched_getaffinity(0))}, load average "
        f"{os.getloadavg()[0]:.1f}",
        flush=True,
    )
    with tempfile.TemporaryDirectory(prefix="mriclip-corrupted-") as folder:
        project = arguments.keep or Path(folder)
        copy_project(project, 12, 64, 2)
        for name, text in BENCH.items():
            (project / "conf" / "bench" / name).write_text(text)
        print(f"demo_data: {kedro_run(project, 'demo_data'):.0f} s", flush=True)
        raw = project / "data" / "01_raw"
        sources = sorted((raw / "images").glob("*.nii.gz"))
        new = raw / "inference" / "images"
        new.mkdir(parents=True)
        scans = pd.read_csv(raw / "scans.csv")
        names = []
        for name, write in corruptions(sources, np.random.default_rng(0)).items():
            scan_id = f"bad_{name}"
            write(raw / "images" / f"{scan_id}.nii.gz")
            (new / f"{scan_id}.nii.gz").write_bytes(
                (raw / "images" / f"{scan_id}.nii.gz").read_bytes()
            )
            names.append(scan_id)
            scans.loc[len(scans)] = {**scans.iloc[0].to_dict(), "scan_id": scan_id,
                                     "patient_id": f"bad_{len(names)}"}  # fmt: skip
        scans.to_csv(raw / "scans.csv", index=False)
        for source in sources[:3]:  # good new scans beside the corrupted ones
            (new / source.name).write_bytes(source.read_bytes())
        seconds = {}
        for pipeline in ("data_engineering", "pretraining", "alignment", "inference"):
            tick = time.perf_counter()
            kedro_run(project, pipeline)
            seconds[pipeline] = time.perf_counter() - tick
            print(f"{pipeline}: {seconds[pipeline]:.1f} s", flush=True)
        reporting = project / "data" / "08_reporting"
        catalog = pd.read_csv(project / "data" / "02_intermediate" / "nifti_catalog.csv")
        training = account(names, catalog, pd.read_csv(reporting / "catalog_problems.csv"))
        inference_problems = sorted((reporting / "inference_problems.csv").iterdir())[-1]
        predictions = sorted(
            (project / "data" / "07_model_output" / "scan_predictions.csv").iterdir()
        )[-1]
        predicted = set(pd.read_csv(predictions / "scan_predictions.csv")["scan_id"])
        listed_new = pd.read_csv(inference_problems / "inference_problems.csv")
        inference = account(
            names,
            pd.DataFrame({"scan_id": sorted(predicted), "status": "ok"}),
            listed_new,
        )
    table = training.merge(inference, on="file", suffixes=("", "_inference"))
    for column in ("problem", "problem_inference"):  # the start says which check listed it
        table[column] = table[column].str.replace(r"\s+", " ", regex=True).str.slice(0, 60)
    print("| file | data_engineering | problem | inference | problem |")
    print("|---|---|---|---|---|")
    for row in table.itertuples():
        print(f"| {row.file} | {row.outcome} | {row.problem} | {row.outcome_inference} | "
              f"{row.problem_inference} |")  # fmt: skip
    for label, frame in (("data_engineering", training), ("inference", inference)):
        counts = frame["outcome"].value_counts().to_dict()
        print(f"{label}: {counts}; unlisted: {int((frame['outcome'] == 'UNLISTED').sum())}")


if __name__ == "__main__":
    main()
