from collections.abc import Mapping

from mriclip.pipelines.data_engineering.pipeline import create_pipeline as data_engineering
from mriclip.pipelines.tuning.nodes import tune_alignment
from mriclip.splits import in_split
from tests.conftest import make_raw_cohort
from tests.pipelines.helpers import load_parameters, run_in_memory


class TestSplitGuard(Mapping):
    """Volumes that raise if a test-split scan is ever read."""

    __test__ = False

    def __init__(self, volumes, forbidden):
        self.volumes, self.forbidden, self.read = volumes, set(forbidden), set()

    def __getitem__(self, scan_id):
        assert scan_id not in self.forbidden, f"test-split scan {scan_id} entered a trial"
        self.read.add(scan_id)
        return self.volumes[scan_id]

    def __iter__(self):
        return iter(self.volumes)

    def __len__(self):
        return len(self.volumes)


def test_the_test_split_never_enters_a_trial(tmp_path):
    images, labels, scans, lesions = make_raw_cohort([f"P{i}" for i in range(10)])
    data = run_in_memory(
        data_engineering(),
        {
            "raw_images": images,
            "raw_labels": labels,
            "raw_scans": scans,
            "raw_lesions": lesions,
            "raw_ablated_images": {},
        },
    )
    splits = data["splits"]
    test_ids = set(in_split(splits, "test")["scan_id"])
    assert test_ids
    parameters = load_parameters("test")
    alignment = {**parameters["alignment"], "image_init": "random"}
    tuning = {**parameters["tuning"], "n_trials": 1, "study_name": "guarded"}
    volumes = TestSplitGuard(data["preprocessed_volumes"], test_ids)
    labels = TestSplitGuard(data["preprocessed_labels"], test_ids)
    best, tuned, trials, *figures = tune_alignment(
        f"sqlite:///{tmp_path}/t.db",
        alignment,
        tuning,
        0,
        scan_sentences=data["scan_sentences"],
        splits=splits,
        preprocessed_volumes=volumes,
        preprocessed_labels=labels,
        lesion_table=data["lesion_table"],
        region_prompts=data["region_prompts"],
        pretrained_encoder=None,
        sentences=parameters["sentences"],
        regions=parameters["regions"],
    )
    assert trials["state"].tolist() == ["COMPLETE"]
    assert volumes.read and volumes.read.isdisjoint(test_ids)
    assert labels.read and labels.read.isdisjoint(test_ids)
    assert best == tuned and set(best["alignment"]) == set(alignment)
    assert len(figures) == 3
