"""The HTML report of a run (:func:`mriclip.reporting.render.render_report`).

Modules, from the bottom up: ``blocks`` (formatted cells and the blocks the Jinja2 template
renders), ``tables`` (metric dicts as tables), ``data_section``, ``sections`` (results and the
headline), ``provenance`` (settings, catalog versions), ``render`` (the whole document, with
``templates/``).

Metric dicts have the shape of ``zero_shot``, ``retrieval`` and ``baselines`` (plain numbers,
``summary.mean_and_sem`` leaves shown as "mean ± sem", and bootstrap intervals stored beside a
value as ``<name>_ci``, shown as "value [low, high]"); the run's layout around them is::

    zero_shot_metrics = {"prompts": {...},
                         "scan_level": {"model": M, "lesion_ablated": M, "before_alignment": M,
                                        "random": B},
                         "lesion_level": {... , "gap_sweep": S},
                         "lesion_detection": {"model": {"auc", "auc_ci", ...}, ...},
                         "targets": {"diagnosis": {"model": M, ...}}}
    retrieval_metrics = {"scan_level": {"model": M, "lesion_ablated": M, "random": B,
                                        "shuffled": B}, "lesion_level": {...}}
    baseline_metrics  = {"level": "scan" | "lesion", "linear_probe": M,
                         "early_fusion": M, "late_fusion": M}

The headline is scan level, what a user gets on a new scan, beside its lesion-ablated
control; the paper's lesion-level protocol follows with its own control.
"""
