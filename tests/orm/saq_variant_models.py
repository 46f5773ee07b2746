"""A model with variants and a file:// backend, shared by a test and its SAQ worker process.

The worker imports this module (``--import tests.orm.saq_variant_models``): that registers
the backend, the model's column (and so its variant makers) and storeroom's jobs.
"""

from __future__ import annotations

import os

from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from storeroom import FileObject, ObstoreBackend, StoredObject, storages
from storeroom.media.variants import Thumbnail

ROOT = os.environ.get("STOREROOM_VARIANT_TEST_ROOT", "")
if ROOT:
    storages.register_backend(ObstoreBackend("variant-disk", f"file://{ROOT}"), overwrite=True)


class Base(DeclarativeBase):
    pass


class Poster(Base):
    __tablename__ = "sr_poster"
    id: Mapped[int] = mapped_column(primary_key=True)
    image: Mapped[FileObject] = mapped_column(
        StoredObject(backend="variant-disk", variants={"thumb": Thumbnail(16, 16, format="png")})
    )
