"""Settings and catalog versions."""

import torch

from mriclip.training.runtime import compute_environment
from tests.reporting.helpers import report_of


def test_settings_and_versions_are_shown(run):
    html = report_of(run)
    assert "<h3>alignment</h3>" in html and "init_temperature: 0.1" in html
    assert "<h3>data_engineering.preprocessing</h3>" in html
    assert "2026-01-01T00.00.00.000Z" in html and "cpu (2 threads)" in html
    assert "Catalog versions this report came from" in html


def test_compute_environment_is_shown_from_the_metrics(run):
    environment = compute_environment()
    metrics = {**run["zero_shot_metrics"], "environment": environment}
    html = report_of(run, zero_shot_metrics=metrics)
    assert "Compute environment" in html
    assert f"{environment['torch_threads']}, {environment['torch_interop_threads']}" in html
    assert environment["versions"]["torch"] in html
    # The instruction set the kernels were chosen for: AVX2 and AVX-512 runs round differently.
    assert f"torch: {torch.backends.cpu.get_cpu_capability()}" in html
    without = report_of(run)
    assert "No compute environment recorded" in without
