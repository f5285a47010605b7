"""A CSV table that may be absent, such as the optional lesions.csv of the data contract."""

from __future__ import annotations

import pandas as pd
from kedro_datasets.pandas import CSVDataset


class OptionalCSVDataset(CSVDataset):
    """Like ``pandas.CSVDataset``, but a missing file loads as an empty table."""

    def load(self) -> pd.DataFrame:
        if not self._exists():
            return pd.DataFrame()
        return super().load()
