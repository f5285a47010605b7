"""An export predicts what its bundle predicts, is read without unpickling anything, carries
every JSON entry of the bundle, and its model card states the metrics it is given."""

import hashlib
import json
import pickle
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pydicom.data
import pytest

from mriclip.console import main
from mriclip.packaging.export import CONFIG, WEIGHTS, ExportError, export_files, write_files
from mriclip.packaging.model_card import render_model_card
from mriclip.phantom import generate_cohort
from mriclip.predictor import Predictor
from tests.inference.test_inference import bundle  # noqa: F401 - the small model's fixture
from tests.pipelines.helpers import PROJECT, load_parameters


def scoring() -> dict:
    evaluation = load_parameters()["evaluation"]
    return {"scan_scoring": evaluation["scan_scoring"], "prompts": evaluation["prompts"]}


@pytest.fixture(scope="module")
def exported(bundle, tmp_path_factory):  # noqa: F811
    folder = tmp_path_factory.mktemp("export")
    write_files(export_files(bundle, scoring(), "# card\n"), folder)
    return folder


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    folder = tmp_path_factory.mktemp("scans")
    cohort = generate_cohort(
        {"seed": 5, "n_patients": 2, "n_scans": 2, "template_spacing_mm": 4.0,
         "voxel_spacing_mm": [3.5, 4.5], "ablated_twins": False}
    )  # fmt: skip
    for name, image in cohort.images.items():
        nib.save(image, folder / name)
    return folder


def test_an_export_predicts_what_its_bundle_predicts(bundle, exported, scans):  # noqa: F811
    from_bundle = Predictor.from_bundle(bundle, scoring()).run_paths(scans, ["frontal lesion"])
    from_export = Predictor.from_export(exported).run_paths(scans, ["frontal lesion"])
    assert len(from_bundle.predictions) == 2 and from_bundle.problems.empty
    pd.testing.assert_frame_equal(from_export.predictions, from_bundle.predictions, atol=1e-6)
    pd.testing.assert_frame_equal(from_export.embeddings, from_bundle.embeddings, atol=1e-6)
    pd.testing.assert_frame_equal(from_export.queries, from_bundle.queries, atol=1e-6)
    assert "tokenizer_config.json" in {p.name for p in (exported / "tokenizer").iterdir()}


class Payload:
    """Unpickling this writes a marker file: proof that a pickle was read."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_loading_an_export_never_unpickles(exported, tmp_path):
    marker = tmp_path / "pickle_was_read"
    payload = pickle.dumps(Payload(marker))
    tampered = tmp_path / "export"
    tampered.mkdir()
    for path in exported.rglob("*"):
        if path.is_file():
            target = tampered / path.relative_to(exported)
            target.parent.mkdir(exist_ok=True)
            target.write_bytes(path.read_bytes())
    for name in ("pytorch_model.bin", "model.pt", "tokenizer/pytorch_model.bin"):
        (tampered / name).write_bytes(payload)
    Predictor.from_export(tampered)  # pickles beside the export are never opened
    assert not marker.exists()

    (tampered / WEIGHTS).write_bytes(payload)  # the weights replaced by a pickle...
    with pytest.raises(ExportError, match="SHA-256 differs"):
        Predictor.from_export(tampered)
    config = json.loads((tampered / CONFIG).read_text())
    config["weights"]["sha256"] = hashlib.sha256(payload).hexdigest()  # ...and the hash too
    (tampered / CONFIG).write_text(json.dumps(config))
    with pytest.raises(ExportError, match="not a safetensors file"):
        Predictor.from_export(tampered)
    assert not marker.exists()


def test_every_json_entry_of_the_bundle_reaches_config_json(bundle):  # noqa: F811
    calibration = {"method": "platt", "targets": {"regions": {"a": [1.5], "b": [-0.2]}}}
    files = export_files({**bundle, "calibration": calibration}, scoring(), "")
    config = json.loads(files[CONFIG])
    assert config["calibration"] == calibration
    assert config["inference"] == json.loads(json.dumps(bundle["inference"]))
    assert config["scoring"] == json.loads(json.dumps(scoring()))
    assert config["config"]["text_encoder"]["name_or_path"] == "tokenizer"
    with pytest.raises(ExportError, match="'calibration' is not JSON data"):
        export_files({**bundle, "calibration": np.zeros(2)}, scoring(), "")


def test_the_model_card_states_the_metrics_it_is_given(bundle):  # noqa: F811
    def result(auc, ci=None):
        return {"overall": {"auc_macro": auc, **({"auc_macro_ci": ci} if ci else {})}}

    zero_shot = {
        "scan_level": {
            "model": result(0.8123, [0.7011, 0.9034]),
            "lesion_ablated": result(0.5012, [0.41, 0.6]),
            "before_alignment": result(0.4444),
            "random": result(0.5),
        },
        "lesion_detection": {"model": {"skipped": "every sample is positive"}},
    }
    splits = pd.DataFrame({"scan_id": ["a", "b", "c"], "patient_id": ["p", "p", "q"],
                           "split": ["train", "train", "test"]})  # fmt: skip
    lesions = pd.DataFrame({"scan_id": ["a", "a", "c"], "region": ["frontal", "temporal", "x"]})
    settings = {key: value for key, value in bundle.items() if key != "state_dict"}
    card = render_model_card(settings, zero_shot, {}, splits, lesions)
    row = next(line for line in card.splitlines() if line.startswith("| Scan level"))
    assert row.split(" | ")[1:] == [
        "0.812 [0.701, 0.903]", "0.501 [0.410, 0.600]", "0.444", "0.500 |"
    ]  # fmt: skip
    assert "skipped (every sample is positive)" in card
    assert "2 patients, 3 scans" in card and "- train: 1 patients, 2 scans" in card
    assert "frontal 1, temporal 1." in card  # training split only
    assert "Not for diagnosis" in card


def test_mriclip_predict_exits_non_zero_only_when_nothing_was_predicted(exported, scans, tmp_path):
    scripts = (PROJECT / "pyproject.toml").read_text().split("[project.scripts]")[1]
    assert 'mriclip = "mriclip.console:main"' in scripts.split("[")[0]
    single_slice = Path(pydicom.data.__file__).parent / "test_files" / "MR_small.dcm"
    args = ["predict", "--model", str(exported), "--out"]
    assert main([*args, str(tmp_path / "a" / "p.csv"), "--images", str(single_slice)]) == 1
    problems = pd.read_csv(tmp_path / "a" / "problems.csv")
    assert problems[["item", "problem"]].values.tolist() == [
        ["MR_small/", "a single slice, not a volume"]
    ]
    assert (
        main([*args, str(tmp_path / "b" / "p.csv"), "--images", str(scans), str(single_slice)]) == 0
    )
    assert len(pd.read_csv(tmp_path / "b" / "p.csv")) == 2
    assert len(pd.read_csv(tmp_path / "b" / "problems.csv")) == 1
    assert main([]) == 2
