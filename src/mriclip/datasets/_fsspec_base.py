"""What every mriclip dataset shares: an fsspec filesystem, versioning, describe/exists."""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)


class FsspecVersionedDataset(AbstractVersionedDataset):
    """Base for one-file datasets on any fsspec filesystem (local, s3://, gcs://, ...).

    Subclasses loading with ``_load_existing`` get ``optional: true``: a file that was never
    saved loads as ``None``, so a node can take it and say the part is absent."""

    def __init__(
        self,
        *,
        filepath: str,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        optional: bool = False,
    ) -> None:
        self._optional = optional
        protocol, path = get_protocol_and_path(filepath, version)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **(fs_args or {}))
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )

    def load(self) -> Any:
        if self._optional and not self._exists():
            return None
        return self._load_existing()

    def _load_existing(self) -> Any:
        raise NotImplementedError

    @property
    def load_path(self) -> str:
        return get_filepath_str(self._get_load_path(), self._protocol)

    @property
    def save_path(self) -> str:
        return get_filepath_str(self._get_save_path(), self._protocol)

    @contextmanager
    def saved_file(self) -> Iterator[str]:
        """A local path of the file this dataset loads (right after ``save``: the version just
        written), downloaded to a temporary folder when the filesystem is remote."""
        path = self.load_path
        if self._protocol == "file":
            yield path
            return
        with tempfile.TemporaryDirectory() as folder:
            local = os.path.join(folder, PurePosixPath(path).name)
            self._fs.get(path, local)
            yield local

    def file_sha256(self) -> str:
        """SHA-256 of the stored file's bytes (the version ``load`` reads): a fingerprint of the
        source that costs a read, not a decode."""
        digest = hashlib.sha256()
        with self._fs.open(self.load_path, mode="rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        return digest.hexdigest()

    def _write_bytes(self, path: str, raw: bytes) -> None:
        self._fs.makedirs(str(PurePosixPath(path).parent), exist_ok=True)
        with self._fs.open(path, mode="wb") as handle:
            handle.write(raw)
        self._fs.invalidate_cache(path)

    def _describe(self) -> dict[str, Any]:
        return {"filepath": self._filepath, "protocol": self._protocol, "version": self._version}

    def _exists(self) -> bool:
        try:
            load_path = self.load_path
        except DatasetError:
            return False
        return self._fs.exists(load_path)
