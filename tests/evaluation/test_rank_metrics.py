import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from mriclip.evaluation.rank_metrics import average_precision, roc_auc


@pytest.mark.parametrize("decimals", [1, 3, None])  # 1 decimal: many ties
def test_rank_metrics_equal_sklearn(decimals):
    rng = np.random.default_rng(decimals or 0)
    for _ in range(200):
        n = int(rng.integers(2, 40))
        labels = rng.random(n) < rng.uniform(0.1, 0.9)
        if labels.all() or not labels.any():
            continue
        scores = rng.random(n) if decimals is None else np.round(rng.random(n), decimals)
        assert roc_auc(labels, scores) == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
        assert average_precision(labels, scores) == pytest.approx(
            average_precision_score(labels, scores), abs=1e-12
        )


def test_rank_metrics_refuse_one_class():
    with pytest.raises(ValueError, match="positive and negative"):
        roc_auc(np.ones(4), np.arange(4))
    with pytest.raises(ValueError, match="relevant"):
        average_precision(np.zeros(4), np.arange(4))
