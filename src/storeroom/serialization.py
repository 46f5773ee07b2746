"""FileObjects as data: the form a client sees, for pydantic, msgspec, Litestar and FastAPI.

A :class:`FileForm` says how a FileObject leaves the process as data and how one comes back:

- the **public form** (the default): ``filename``, ``size``, ``content_type`` and
  ``checksum``, what a client may see, ``media`` when the upload was analysed (image
  ``width``/``height``/``format``, PDF ``pages``, audio/video ``duration``; see
  docs/validation.md), plus ``url``, a signed download URL, when the form
  is made with ``url=SECONDS``;
- with ``internals=True`` also where the file lives and what the store said about it:
  ``backend``, ``path``, ``etag``, ``version``, ``last_modified`` and ``metadata``.

Reading data back is as strict as the form: the public form accepts only the public fields
(``url`` is ignored), so a client can never point a FileObject at another backend or path;
``internals=True`` accepts the storage fields too (for trusted data: a queue, a cache).

pydantic v2 (``FileObject`` fields use the public form; pick another with ``Annotated``)::

    class Document(BaseModel):
        title: str
        file: FileObject                                      # public form
        attachment: Annotated[FileObject, FileForm(url=600)]  # plus a signed URL

msgspec::

    msgspec.json.encode(file, enc_hook=PUBLIC.enc_hook)
    msgspec.json.decode(data, type=FileObject, dec_hook=PUBLIC.dec_hook)
    msgspec.json.schema(FileObject, schema_hook=PUBLIC.schema_hook)

Litestar: ``StoreroomPlugin(files_as=FileForm(...))`` registers the encoder, the decoder and
the OpenAPI schema. FastAPI: response models and return annotations go through pydantic.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from storeroom.file import FileObject

if TYPE_CHECKING:
    from storeroom.registry import StorageRegistry

__all__ = ["INTERNALS", "PUBLIC", "FileForm", "media_of"]


@dataclass(frozen=True, slots=True)
class _Field:
    name: str
    json_type: str  # "string", "integer", "date-time", "object"
    nullable: bool
    internal: bool
    description: str


_FIELDS = (
    _Field("filename", "string", False, False, "The file's name as the user gave it."),
    _Field("size", "integer", True, False, "Size in bytes (null until known)."),
    _Field("content_type", "string", False, False, "The file's media type."),
    _Field(
        "checksum",
        "string",
        True,
        False,
        "'<algorithm>:<hex>' of the content, e.g. 'blake3:...', 'sha256:...', 'xxh3-128:...' "
        "(null until saved).",
    ),
    _Field("backend", "string", True, True, "Key of the storage backend holding the file."),
    _Field("path", "string", False, True, "The object's key inside the backend."),
    _Field("etag", "string", True, True, "The store's entity tag."),
    _Field("version", "string", True, True, "The store's object version."),
    _Field("last_modified", "date-time", True, True, "When the store last wrote the object."),
    _Field("metadata", "object", False, True, "User metadata kept with the file."),
)
_URL_DESCRIPTION = "A signed download URL, valid for a limited time."
_MEDIA_KEYS = ("width", "height", "format", "pages", "duration")
_MEDIA_DESCRIPTION = (
    "What the bytes revealed at upload (present when analysed): width, height and format "
    "of an image, pages of a PDF, duration in seconds of audio or video."
)


def media_of(file: FileObject) -> dict[str, Any]:
    """The media facts recorded on ``file`` at upload (``{}`` when none were)."""
    return {key: file.metadata[key] for key in _MEDIA_KEYS if key in file.metadata}


@dataclass(frozen=True, slots=True)
class FileForm:
    """How a FileObject is shown as data and read back (see the module docstring).

    Args:
        url: Add ``url``, a download URL signed for this many seconds (None: no URL). The
            backend must be able to sign (S3, GCS, Azure, or local/memory with a signer).
        internals: Add the storage fields (``backend``, ``path``, ``etag``, ``version``,
            ``last_modified``, ``metadata``) and accept them when reading data back.
        registry: Where read-back FileObjects resolve their backend (default ``storages``).
    """

    url: int | None = None
    internals: bool = False
    registry: StorageRegistry | None = None

    def __post_init__(self) -> None:
        if self.url is not None and (isinstance(self.url, bool) or self.url <= 0):
            raise ValueError(
                f"FileForm(url=...) is the URL's lifetime in seconds (a positive "
                f"int) or None, got {self.url!r}"
            )

    def _fields(self) -> list[_Field]:
        return [f for f in _FIELDS if self.internals or not f.internal]

    # -- the form itself --------------------------------------------------------------------

    def dump(self, file: FileObject) -> dict[str, Any]:
        """``file`` as a JSON-ready dict in this form."""
        if not isinstance(file, FileObject):
            raise TypeError(f"expected a FileObject, got {type(file).__name__}")
        data: dict[str, Any] = {}
        for field in self._fields():
            value = getattr(file, field.name)
            if field.name == "last_modified" and value is not None:
                value = value.isoformat()
            elif field.name == "metadata":
                value = dict(value)
            data[field.name] = value
        media = media_of(file)
        if media:
            data["media"] = media
        if self.url is not None:
            data["url"] = file.sign(expires_in=self.url)
        return data

    def load(self, data: Any) -> FileObject:
        """A FileObject from a dict in this form (a FileObject is returned as it is).

        Raises ``ValueError`` naming the field when a field is unknown to this form (the
        public form refuses ``backend`` and ``path``: a client cannot choose them) or has
        the wrong type.
        """
        if isinstance(data, FileObject):
            return data
        if not isinstance(data, Mapping):
            raise ValueError(f"a file must be an object with a filename, got {type(data).__name__}")
        known = {f.name: f for f in self._fields()}
        values: dict[str, Any] = {}
        for name, value in data.items():
            if name in ("url", "media"):
                continue  # shown to clients, never taken from them
            field = known.get(name)
            if field is None:
                allowed = ", ".join([*known, "media", "url"])
                hint = (
                    ""
                    if self.internals or name not in {f.name for f in _FIELDS}
                    else (" (storage fields are not accepted in the public form)")
                )
                raise ValueError(f"unknown file field {name!r}{hint}; expected: {allowed}")
            values[name] = _checked(field, value)
        if "filename" not in values and "path" not in values:
            raise ValueError("a file needs a 'filename'")
        return FileObject(registry=self.registry, **values)

    def json_schema(self, *, mode: str = "serialization") -> dict[str, Any]:
        """The JSON Schema of this form: what ``dump`` writes (``mode="serialization"``) or
        what ``load`` accepts (``mode="validation"``)."""
        properties: dict[str, Any] = {}
        for field in self._fields():
            properties[field.name] = _field_schema(field)
        properties["media"] = {"type": "object", "description": _MEDIA_DESCRIPTION}
        if self.url is not None or mode == "validation":
            properties["url"] = {"type": "string", "format": "uri", "description": _URL_DESCRIPTION}
        if mode == "validation":
            required = ["filename"]
        else:
            required = [f.name for f in self._fields()]
            if self.url is not None:
                required.append("url")
        return {
            "title": "FileObject",
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": False,
        }

    # -- msgspec ----------------------------------------------------------------------------

    def enc_hook(self, obj: Any) -> Any:
        """msgspec ``enc_hook``: FileObjects in this form; other types are not supported."""
        if isinstance(obj, FileObject):
            return self.dump(obj)
        raise NotImplementedError(f"cannot encode objects of type {type(obj).__name__}")

    def dec_hook(self, type_: type, obj: Any) -> Any:
        """msgspec ``dec_hook``: FileObjects from this form; other types are not supported."""
        if type_ is FileObject:
            return self.load(obj)
        raise NotImplementedError(f"cannot decode objects of type {type_!r}")

    def schema_hook(self, type_: type) -> dict[str, Any]:
        """msgspec ``schema_hook``: the JSON Schema of this form for FileObject."""
        if type_ is FileObject:
            return self.json_schema()
        raise NotImplementedError(f"no schema for type {type_!r}")

    # -- pydantic v2 ------------------------------------------------------------------------

    def __get_pydantic_core_schema__(self, source: Any, handler: Any) -> Any:
        """pydantic v2: validate with :meth:`load`, serialize with :meth:`dump`."""
        from pydantic_core import core_schema

        def typed_dict(mode: str) -> Any:
            schema = self.json_schema(mode=mode)
            fields = {
                name: core_schema.typed_dict_field(
                    _core_field(core_schema, prop, parse_dates=mode == "validation"),
                    required=name in schema["required"],
                    metadata={"pydantic_js_updates": {"description": prop["description"]}},
                )
                for name, prop in schema["properties"].items()
            }
            return core_schema.typed_dict_schema(
                fields,
                extra_behavior="forbid",
                config={"title": "FileObject"},
            )

        from_data = core_schema.no_info_after_validator_function(
            self.load, typed_dict("validation")
        )
        return core_schema.json_or_python_schema(
            json_schema=from_data,
            python_schema=core_schema.no_info_wrap_validator_function(_instance_or, from_data),
            serialization=core_schema.plain_serializer_function_ser_schema(
                self.dump,
                return_schema=typed_dict("serialization"),
            ),
        )


PUBLIC = FileForm()
"""The public form: filename, size, content type and checksum."""

INTERNALS = FileForm(internals=True)
"""The full form, with where the file lives: for trusted data only."""

FileObject.pydantic_form = PUBLIC


def _instance_or(value: Any, validate: Any) -> Any:
    return value if isinstance(value, FileObject) else validate(value)


def _checked(field: _Field, value: Any) -> Any:
    if value is None:
        if field.nullable:
            return None
        raise ValueError(f"file field {field.name!r} must not be null")
    ok = {
        "string": isinstance(value, str),
        "integer": isinstance(value, int) and not isinstance(value, bool) and value >= 0,
        "date-time": isinstance(value, (str, datetime)),
        "object": isinstance(value, Mapping),
    }[field.json_type]
    if not ok or (field.name in ("filename", "path") and not value):
        wanted = {
            "string": "a string",
            "integer": "a non-negative integer",
            "date-time": "an ISO 8601 date-time",
            "object": "an object",
        }[field.json_type]
        raise ValueError(f"file field {field.name!r} must be {wanted}, got {value!r}")
    if field.json_type == "date-time" and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(
                f"file field {field.name!r} must be an ISO 8601 date-time, got {value!r}"
            ) from None
    return value


def _field_schema(field: _Field) -> dict[str, Any]:
    if field.json_type == "date-time":
        base: dict[str, Any] = {"type": "string", "format": "date-time"}
    elif field.json_type == "integer":
        base = {"type": "integer", "minimum": 0}
    else:
        base = {"type": field.json_type}
        if field.name in ("filename", "path"):
            base["minLength"] = 1
    if field.nullable:
        return {"anyOf": [base, {"type": "null"}], "description": field.description}
    return {**base, "description": field.description}


def _core_field(core_schema: Any, prop: Mapping[str, Any], *, parse_dates: bool) -> Any:
    if "anyOf" in prop:
        return core_schema.nullable_schema(
            _core_field(core_schema, prop["anyOf"][0], parse_dates=parse_dates)
        )
    kind = prop["type"]
    if kind == "integer":
        return core_schema.int_schema(ge=0)
    if kind == "object":
        return core_schema.dict_schema(core_schema.str_schema(), core_schema.any_schema())
    if prop.get("format") == "date-time" and parse_dates:
        return core_schema.datetime_schema()
    if prop.get("format") == "date-time":  # dump writes ISO 8601 strings
        return core_schema.str_schema(metadata={"pydantic_js_updates": {"format": "date-time"}})
    return core_schema.str_schema(min_length=prop.get("minLength"))
