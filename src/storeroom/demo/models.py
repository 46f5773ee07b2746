"""The specification's TeamFile model."""

from __future__ import annotations

from sqlalchemy.orm import Mapped, mapped_column

from storeroom import FileObject, StoredObject
from storeroom.orm import UUIDAuditBase


class TeamFile(UUIDAuditBase):
    """Team file with private storage."""

    __tablename__ = "team_file"

    name: Mapped[str]
    file: Mapped[FileObject] = mapped_column(StoredObject(backend="private"))

    async def url(self) -> str:
        """Generate signed URL for file access."""
        return await self.file.sign_async(expires_in=3600)
