"""A model for the CLI tests, importable by the ``storeroom`` subprocess (``--model``)."""

from __future__ import annotations

import os

from sqlalchemy.orm import Mapped, mapped_column

from storeroom import FileObject, StoredObject
from storeroom.orm import UUIDAuditBase

TABLE = os.environ.get("STOREROOM_CLI_TABLE", "cli_document")


class Document(UUIDAuditBase):
    """A document owning one file on the ``local`` backend."""

    __tablename__ = TABLE

    name: Mapped[str]
    file: Mapped[FileObject | None] = mapped_column(StoredObject(backend="local"), nullable=True)
