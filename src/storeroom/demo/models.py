"""The specification's TeamFile model, with previews: a thumbnail of an image and a picture
of a PDF's first page (made with Pillow or pyvips and pypdfium2, in the ``demo`` extra)."""

from __future__ import annotations

from sqlalchemy.orm import Mapped, mapped_column

from storeroom import FileObject, StoredObject
from storeroom.media.validation import ContentTypes, ImageLimits
from storeroom.media.variants import PdfPage, Thumbnail
from storeroom.orm import UUIDAuditBase

#: The variant each kind of file shows in the list, by name.
PREVIEWS = {
    "thumb": Thumbnail(160, 160, format="webp"),
    "page1": PdfPage(1, width=160, format="webp"),
}


class TeamFile(UUIDAuditBase):
    """Team file with private storage."""

    __tablename__ = "team_file"

    name: Mapped[str]
    file: Mapped[FileObject] = mapped_column(StoredObject(backend="private", variants=PREVIEWS))

    async def url(self) -> str:
        """Generate signed URL for file access."""
        return await self.file.sign_async(expires_in=3600)

    async def preview_url(self) -> str | None:
        """A signed URL of the file's preview, if its type has one (made on first request
        if the job after the upload has not made it yet)."""
        recorded = self.file.metadata.get("variants") or {}
        for name in PREVIEWS:
            if name in recorded:
                return await self.file.variant(name).sign_async(expires_in=3600)
        return None


class TeamPhoto(UUIDAuditBase):
    """The team's photo: an image-only column, judged by the bytes, never by the name."""

    __tablename__ = "team_photo"

    image: Mapped[FileObject] = mapped_column(
        StoredObject(
            backend="private",
            validators=[
                ContentTypes("image/png", "image/jpeg", "image/gif", "image/webp"),
                ImageLimits(max_pixels=50_000_000),
            ],
            variants={"thumb": PREVIEWS["thumb"]},
        )
    )
