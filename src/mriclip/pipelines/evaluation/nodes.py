"""The evaluation pipeline's nodes. Each node is one function of ``mriclip.evaluation``, where
the evaluation is written and tested, taking the catalog entries and parameters that
``pipeline.py`` names, in that order; nothing is done between the catalog and the library.

Embeddings are made once (``test_embeddings``), the test scans scored from them
(``test_scores``), then the metrics of the protocol (``protocol``: the model beside its
lesion-ablated control and the model before alignment), the supervised references
(``baselines``) and the figures (``figures``).
"""

from __future__ import annotations

from mriclip.evaluation.baselines import frozen_embedding_baselines as baseline_evaluation
from mriclip.evaluation.embed_test_split import embed_for_evaluation
from mriclip.evaluation.figures import evaluation_figures
from mriclip.evaluation.protocol import retrieval_protocol as retrieval_evaluation
from mriclip.evaluation.protocol import zero_shot_protocol as zero_shot_evaluation
from mriclip.evaluation.score_test_split import score_test_scans

__all__ = [
    "baseline_evaluation",
    "embed_for_evaluation",
    "evaluation_figures",
    "retrieval_evaluation",
    "score_test_scans",
    "zero_shot_evaluation",
]
