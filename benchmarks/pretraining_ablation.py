"""The paper's Table 1 ablation on the current data: zero-shot AUC of alignment from the
pretrained image encoder versus from random initialisation (same seed, same steps).

Needs data_engineering and pretraining to have run (e.g. after `kedro run`). For each
initialisation it runs the alignment and evaluation pipelines and reads the metrics they
saved; extra arguments are passed to `kedro run` (e.g. `--env test`).

    python benchmarks/pretraining_ablation.py [--params ...]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

METRICS = Path("data/08_reporting/zero_shot_metrics.json")
PRETRAINING = Path("data/08_reporting/pretraining_summary.json")


def latest(path: Path) -> dict:
    version = sorted(path.iterdir())[-1]
    return json.loads((version / path.name).read_text())


def main() -> None:
    rows = []
    for init in ("pretrained", "random"):
        start = time.perf_counter()
        command = [
            "kedro",
            "run",
            "--pipelines",
            "alignment,evaluation",
            "--params",
            f"alignment.image_init={init}",
            *sys.argv[1:],
        ]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        metrics = latest(METRICS)
        for level in ("lesion_level", "scan_level"):
            if level in metrics:
                overall = metrics[level]["model"]["overall"]
                rows.append(
                    (
                        init,
                        level,
                        overall.get("auc_macro"),
                        overall.get("auc_micro_pooled"),
                        time.perf_counter() - start,
                    )
                )
    pretraining = latest(PRETRAINING)
    print(
        f"pretraining: reconstruction MSE {pretraining['reconstruction_loss']:.4f} vs "
        f"unmasked-mean {pretraining['unmasked_mean_loss']:.4f} on held-out volumes"
    )
    print("| image encoder init | level | zero-shot macro AUC | micro AUC | wall s |")
    print("|---|---|---|---|---|")
    for init, level, macro, micro, seconds in rows:
        print(f"| {init} | {level.split('_')[0]} | {macro:.3f} | {micro:.3f} | {seconds:.0f} |")


if __name__ == "__main__":
    main()
