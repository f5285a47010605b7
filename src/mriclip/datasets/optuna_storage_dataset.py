"""Where Optuna studies live: a database URL, optionally from credentials."""

from __future__ import annotations

from typing import Any

from kedro.io import AbstractDataset, DatasetError


class OptunaStorageDataset(AbstractDataset[None, str]):
    """Loads the storage URL of the Optuna study (read-only).

    The default ``url`` is a SQLite file under ``data/`` (one process at a time). Several
    processes on one machine share a study through Optuna's JournalStorage on a file, no
    server needed: ``url: journal:///data/07_model_output/optuna.journal``. A database shared
    by workers on several machines (PostgreSQL, MySQL) comes from credentials so its password
    never lands in git::

        # conf/local/credentials.yml
        optuna_db:
          url: postgresql://user:password@host:5432/optuna

        # conf/local/catalog.yml
        optuna_storage:
          type: mriclip.datasets.OptunaStorageDataset
          credentials: optuna_db
    """

    def __init__(
        self,
        *,
        url: str | None = None,
        credentials: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        self._url = (credentials or {}).get("url", url)
        if not self._url:
            raise DatasetError("OptunaStorageDataset needs a url or credentials with a 'url'")
        self.metadata = metadata

    def load(self) -> str:
        return self._url

    def save(self, data: None) -> None:
        raise DatasetError("OptunaStorageDataset is read-only: it only names the storage")

    def _describe(self) -> dict[str, Any]:
        scheme = self._url.split("://", 1)[0]
        return {"url": self._url if scheme in ("sqlite", "journal") else f"{scheme}://***"}
