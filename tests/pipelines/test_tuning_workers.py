"""Two tuning workers (two processes) at the same time on one study: the README's
multi-worker route, on PostgreSQL (where a server is reachable) and on a journal file."""

from __future__ import annotations

import multiprocessing
import os
import uuid

import optuna
import pytest
import sqlalchemy
import torch

from mriclip.datasets import OptunaStorageDataset
from mriclip.pipelines.data_engineering.pipeline import create_pipeline as data_engineering
from mriclip.pipelines.tuning.nodes import tune_alignment
from mriclip.pipelines.tuning.pipeline import create_pipeline as tuning
from mriclip.tuning.study import make_storage
from tests.conftest import make_raw_cohort
from tests.pipelines.helpers import load_parameters, run_in_memory

POSTGRES_ENV = "MRICLIP_TEST_POSTGRES_URL"
TRIALS_PER_WORKER = 1


@pytest.fixture
def postgres_url():
    """The server's database with a fresh, empty schema first on the search path: the two
    workers meet an empty database, as on a study's first day, and nothing is left behind."""
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        pytest.skip(
            f"no PostgreSQL server: set {POSTGRES_ENV}="
            "postgresql+psycopg://user:password@host:5432/db to run the two-worker test on it "
            "(.ci/run starts one)"
        )
    pytest.importorskip("psycopg", reason="PostgreSQL driver missing: pip install -e '.[postgres]'")
    schema = f"mriclip_test_{uuid.uuid4().hex[:8]}"
    engine = sqlalchemy.create_engine(url)
    with engine.begin() as connection:
        connection.execute(sqlalchemy.text(f'CREATE SCHEMA "{schema}"'))
    try:
        yield f"{url}{'&' if '?' in url else '?'}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as connection:
            connection.execute(sqlalchemy.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


def tuning_worker(data: dict, storage_url: str, study_name: str, barrier) -> None:
    """One worker: `kedro run --pipeline tuning` on one machine is this node call."""
    torch.set_num_threads(1)  # two workers share the test machine's cores
    parameters = load_parameters("test")
    tuning = {**parameters["tuning"], "n_trials": TRIALS_PER_WORKER, "study_name": study_name}
    barrier.wait(timeout=300)  # both workers start their trials together
    tune_alignment(
        OptunaStorageDataset(credentials={"url": storage_url}).load(),
        {**parameters["alignment"], "image_init": "random"},
        tuning,
        0,
        **data,
        pretrained_encoder=None,
        sentences=parameters["sentences"],
        regions=parameters["regions"],
    )


@pytest.fixture(scope="module")
def engineered():
    images, labels, scans, lesions = make_raw_cohort([f"P{i}" for i in range(8)])
    out = run_in_memory(
        data_engineering(),
        {"raw_images": images, "raw_labels": labels, "raw_scans": scans, "raw_lesions": lesions},
    )
    # What the tuning pipeline reads from data engineering.
    return {key: out[key] for key in tuning().inputs() & set(out)}


def run_two_workers(engineered: dict, storage_url: str) -> optuna.Study:
    study_name = f"two-workers-{uuid.uuid4().hex[:8]}"
    context = multiprocessing.get_context("spawn")  # fresh interpreters, as on two machines
    barrier = context.Barrier(2)
    workers = [
        context.Process(target=tuning_worker, args=(engineered, storage_url, study_name, barrier))
        for _ in range(2)
    ]
    for worker in workers:
        worker.start()
    try:
        for worker in workers:
            worker.join(timeout=600)
    finally:
        for worker in workers:
            if worker.is_alive():
                worker.terminate()
    assert [worker.exitcode for worker in workers] == [0, 0]
    return optuna.load_study(study_name=study_name, storage=make_storage(storage_url))


def check_shared_study(study: optuna.Study) -> None:
    trials = study.get_trials()
    assert sorted(trial.number for trial in trials) == list(range(2 * TRIALS_PER_WORKER))
    assert all(trial.state == optuna.trial.TrialState.COMPLETE for trial in trials)
    by_worker: dict[str, list] = {}
    for trial in trials:
        by_worker.setdefault(trial.user_attrs["worker"], []).append(trial)
    assert sorted(len(own) for own in by_worker.values()) == [TRIALS_PER_WORKER] * 2
    spans = [
        (min(t.datetime_start for t in own), max(t.datetime_complete for t in own))
        for own in by_worker.values()
    ]
    assert max(start for start, _ in spans) < min(end for _, end in spans)  # they overlapped
    # the enqueued default trial ran once, not once per worker
    assert sum(bool(trial.user_attrs.get("defaults")) for trial in trials) == 1


def test_two_workers_share_one_postgresql_study(postgres_url, engineered):
    study = run_two_workers(engineered, postgres_url)
    check_shared_study(study)
    engine = sqlalchemy.create_engine(postgres_url)
    with engine.connect() as connection:  # read back from the database itself
        schema = connection.execute(sqlalchemy.text("SELECT current_schema()")).scalar()
        numbers = connection.execute(sqlalchemy.text("SELECT number FROM trials")).scalars()
        assert schema.startswith("mriclip_test_")
        assert sorted(numbers) == list(range(2 * TRIALS_PER_WORKER))
    engine.dispose()


def test_two_workers_share_one_journal_file_without_a_server(engineered, tmp_path):
    journal = tmp_path / "optuna.journal"
    study = run_two_workers(engineered, f"journal:///{journal}")
    check_shared_study(study)
    assert journal.stat().st_size > 0
