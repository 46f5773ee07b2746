"""The ``StoredObject`` column type: FileObjects (or lists of them) stored as JSON."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any, SupportsIndex

from sqlalchemy import JSON, event
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.mutable import MutableList
from sqlalchemy.orm import InstanceState, InstrumentedAttribute
from sqlalchemy.types import TypeDecorator, TypeEngine

from storeroom.errors import ConfigurationError
from storeroom.file import FileObject
from storeroom.media.validation import Rule, ValidatorLike, validators_from
from storeroom.orm import lifecycle
from storeroom.orm.layout import PathFunction, default_path

__all__ = ["FileList", "StoredObject", "VariantMaker"]

_VARIANT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")


def _variants_from(variants: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check a column's ``variants=`` mapping once, at definition."""
    if variants is None:
        return {}
    if not isinstance(variants, Mapping):
        raise ConfigurationError(
            f"StoredObject(variants=...) is a mapping of name to maker, e.g. "
            f"{{'thumb': Thumbnail(256, 256)}}, got {type(variants).__name__}"
        )
    checked: dict[str, Any] = {}
    for name, maker in variants.items():
        if not isinstance(name, str) or not _VARIANT_NAME.fullmatch(name):
            raise ConfigurationError(
                f"variant name {name!r} must be 1-64 letters, digits, '_' or '-' "
                "(it becomes part of the variant's path)"
            )
        for attribute in ("make", "make_async", "content_type", "format", "accepts"):
            if not hasattr(maker, attribute):
                raise ConfigurationError(
                    f"variant {name!r}: {maker!r} is not a variant maker (Thumbnail, PdfPage, "
                    f"or an object with {attribute!r})"
                )
        checked[name] = maker
    return checked


VariantMaker = Any
"""A variant maker: :class:`~storeroom.media.variants.Thumbnail`, ``PdfPage`` or alike."""


def _key(file: FileObject) -> tuple[str | None, str]:
    return (file.backend, file.path)


class FileList(MutableList[FileObject]):
    """A list of FileObjects whose in-place changes SQLAlchemy tracks.

    It remembers the files it held when loaded (or last committed), so files removed from
    it can be deleted from the store once the removal is committed.
    """

    _committed: list[FileObject]

    @classmethod
    def coerce(cls, key: str, value: Any) -> FileList | None:
        """Turn an assigned plain list into a FileList (None stays None)."""
        if value is None or isinstance(value, FileList):
            return value
        if isinstance(value, list):
            files = cls(_as_file(item) for item in value)
            files._committed = []
            return files
        return cls(_as_file(item) for item in super().coerce(key, value) or [])

    @classmethod
    def associate_with_attribute(cls, attribute: InstrumentedAttribute[Any]) -> None:
        """Track ``attribute`` (SQLAlchemy's mutation events), and give every row its own list.

        Assigning a FileList that another row holds (``b.attachments = a.attachments``)
        gives the row a new FileList of the same files: one list object in two rows would
        make the first row's committed files count as the second's own, so the second would
        share the stored objects instead of getting copies (lifecycle.plan_flush).
        """
        super().associate_with_attribute(attribute)
        key = attribute.key

        def own_list(
            target: InstanceState[Any], value: Any, oldvalue: Any, _initiator: object
        ) -> Any:
            if not isinstance(value, FileList) or value is oldvalue:
                return value
            parents = value._parents
            held_as = [n for n, v in target.dict.items() if v is value and n != key]
            if not held_as and not value.committed_files() and all(p is target for p in parents):
                return value  # a new list that no other row or column holds
            fresh = FileList(value)
            fresh._committed = []
            fresh._parents[target] = key
            # SQLAlchemy's listener ran first and linked the row to the given list: undo
            # that, unless the row holds that list in another column (which stays tracked).
            if held_as:
                parents[target] = held_as[0]
            else:
                parents.pop(target, None)
            return fresh

        event.listen(attribute, "set", own_list, raw=True, retval=True, propagate=True)

    def committed_files(self) -> list[FileObject]:
        """The files this list held when it was loaded or last committed."""
        return list(getattr(self, "_committed", []))

    def mark_committed(self) -> None:
        """Record the current files as the committed state."""
        self._committed = list(self)

    # Items added in place are converted like assigned lists.
    def append(self, item: FileObject) -> None:
        super().append(_as_file(item))

    def extend(self, items: Iterable[FileObject]) -> None:
        super().extend(_as_file(item) for item in items)

    def insert(self, index: SupportsIndex, item: FileObject) -> None:
        super().insert(index, _as_file(item))

    def __reduce_ex__(self, proto: SupportsIndex) -> tuple[type[FileList], tuple[list[Any]]]:
        return (self.__class__, (list(self),))


def _as_file(item: Any) -> FileObject:
    if isinstance(item, FileObject):
        return item
    raise ConfigurationError(
        f"a StoredObject(multiple=True) column holds FileObjects, got {type(item).__name__}"
    )


class StoredObject(TypeDecorator[Any]):
    """A column holding a :class:`FileObject` (or a list of them with ``multiple=True``).

    Stored as JSON (JSONB on PostgreSQL): backend key, path, filename, content type, size,
    checksum, etag, version, last modified and metadata. Assigning a FileObject with pending
    content to the column uploads it during the session's flush, before the commit (see
    :mod:`storeroom.orm.lifecycle`). ``backend`` is the backend for FileObjects assigned
    without one; ``path`` chooses where uploads go (default: :func:`default_path`).

    Example::

        class TeamFile(UUIDAuditBase):
            __tablename__ = "team_file"
            name: Mapped[str]
            file: Mapped[FileObject] = mapped_column(StoredObject(backend="private"))
    """

    impl = JSON
    cache_ok = True
    holds_files = True
    """Marks the column type the transaction rule watches (:mod:`storeroom.orm.lifecycle`)."""

    def __init__(
        self,
        backend: str | None = None,
        multiple: bool = False,
        *,
        path: PathFunction | None = None,
        validators: Iterable[ValidatorLike] | None = None,
        variants: Mapping[str, VariantMaker] | None = None,
        analyze: bool = False,
    ) -> None:
        super().__init__()
        if backend is not None and (not isinstance(backend, str) or not backend):
            raise ConfigurationError(
                f"StoredObject(backend=...) takes a backend key, got {backend!r}"
            )
        self.backend = backend
        self.multiple = multiple
        self.path_function: PathFunction = path or default_path
        self.validators: tuple[Rule, ...] = validators_from(validators)
        self.variants: dict[str, VariantMaker] = _variants_from(variants)
        self.analyze = bool(analyze or self.validators or self.variants)
        if multiple:
            # Track in-place list changes on every attribute mapped with this type.
            FileList.as_mutable(self)
        lifecycle.install()

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(JSONB())
        return dialect.type_descriptor(JSON())

    def process_bind_param(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        lifecycle.refuse_unsafe_bind(value)
        if self.multiple:
            if isinstance(value, FileObject):
                raise ConfigurationError(
                    "this StoredObject column has multiple=True: assign a list of FileObjects"
                )
            return [_as_file(item).to_dict() for item in value]
        if isinstance(value, FileObject):
            return value.to_dict()
        return _as_file(value).to_dict()

    def process_result_value(self, value: Any, dialect: Dialect) -> Any:
        if value is None:
            return None
        if isinstance(value, str):  # drivers that return JSON as text
            import json

            value = json.loads(value)
        if self.multiple:
            files = FileList(FileObject.from_dict(item) for item in value)
            for file in files:
                file._in_row = (file._backend_key, file.path)
            files.mark_committed()
            return files
        file = FileObject.from_dict(value)
        # Another row given it gets a copy; an in-place edit shows (lifecycle.plan_flush).
        file._in_row = (file._backend_key, file.path)  # the slot: a property costs a call
        return file

    def copy(self, **kw: Any) -> StoredObject:
        return StoredObject(
            self.backend,
            self.multiple,
            path=self.path_function,
            validators=self.validators,
            variants=self.variants,
            analyze=self.analyze,
        )

    @property
    def python_type(self) -> type[Any]:
        return list if self.multiple else FileObject

    def __repr__(self) -> str:
        return f"StoredObject(backend={self.backend!r}, multiple={self.multiple!r})"
