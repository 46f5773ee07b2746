"""The one format every configuration source produces: :class:`BackendSpec`.

Environment variables, TOML/JSON/YAML files, pydantic settings and dataclasses are all turned
into :class:`BackendSpec` values (:func:`spec_from_mapping` reads any mapping). The work is
done next door: :mod:`~storeroom.config.validation` checks a spec,
:mod:`~storeroom.config.construction` builds and registers its backend, and
:mod:`~storeroom.config.urls` is the URL factory. Their public names are re-exported here
and from :mod:`storeroom.config`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from storeroom.config.construction import (
    backend_options,
    build_backend,
    build_backends,
    location_url,
    register_specs,
)
from storeroom.config.errors import InvalidBackendSpec, spec_error
from storeroom.config.specdata import SpecData
from storeroom.config.urls import backend_from_url
from storeroom.config.validation import (
    RESERVED_FIELDS,
    SPEC_FIELDS,
    TYPE_ALIASES,
    parse_bool,
    parse_json_object,
    validate_spec,
)

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend

__all__ = [
    "RESERVED_FIELDS",
    "SPEC_FIELDS",
    "TYPE_ALIASES",
    "BackendSpec",
    "InvalidBackendSpec",
    "backend_from_url",
    "build_backends",
    "parse_bool",
    "parse_json_object",
    "register_specs",
    "spec_error",
    "spec_from_mapping",
]


@dataclass(slots=True, repr=False)
class BackendSpec(SpecData):
    """One backend to register: what every configuration source produces.

    Give either ``type`` with its location fields, or a ``url`` (the type then follows from
    the URL's scheme, see :func:`backend_from_url`):

    - ``s3`` / ``minio``: ``bucket`` (a name or ``s3://name/``), ``prefix``, ``region``,
      ``endpoint``. ``minio`` defaults ``endpoint`` to ``http://localhost:9000`` and
      ``region`` to ``us-east-1``.
    - ``gcs`` (``gs``): ``bucket``, ``prefix``, ``endpoint``.
    - ``azure`` (``az``): ``bucket`` (the container; ``container`` is accepted), ``prefix``,
      ``endpoint``.
    - ``local`` (``file``): ``path`` (the directory, created when missing), ``prefix``.
    - ``memory``: nothing.
    - ``fsspec``: ``protocol`` (``"file"``, ``"s3"``, ...), ``bucket`` and/or ``prefix``;
      ``options`` are the filesystem's storage options.

    ``options`` are passed to the backend as keyword options (obstore's names, e.g.
    ``aws_access_key_id``). An ``endpoint`` starting with ``http://`` also allows plain HTTP.
    ``default=True`` makes the backend the registry's default.

    Applied after the backend is built: ``signing_secret`` and ``signing_base_url``
    (HMAC-signed URLs for stores that cannot sign), ``retry``, ``timeout`` and
    ``checksum_algorithm`` (the digest new saves record, the backend's
    :attr:`~storeroom.backends.base.StorageBackend.checksum_algorithm`: ``"blake3"`` by
    default, ``"sha256"``, ``"xxh3-128"`` with ``storeroom[xxhash]``...; S3's own upload
    checksum stays the option ``aws_checksum_algorithm``).

    ``source`` says where the spec came from, for error messages. Secrets (options named
    like keys, tokens, passwords, connection strings, and ``signing_secret``) are shown as
    ``'***'`` in ``repr()`` and in every error message. Creating a spec validates it
    (:func:`storeroom.config.validation.validate_spec`).
    """

    def __post_init__(self) -> None:
        validate_spec(self)

    def backend_options(self) -> dict[str, Any]:
        """The keyword options the backend is built with (secrets in the clear)."""
        return backend_options(self)

    def location_url(self) -> str:
        """The URL (or fsspec protocol and prefix) the backend is built for."""
        return location_url(self)

    def build(self) -> StorageBackend:
        """Build the backend this spec describes (does not register it).

        Raises :class:`InvalidBackendSpec` when the backend rejects the spec, e.g. an option
        it does not accept; the message names the key, the option and what is valid.
        """
        return build_backend(self)


def spec_from_mapping(
    data: Mapping[str, Any], *, source: str | None = None, key: str | None = None
) -> BackendSpec:
    """Build a :class:`BackendSpec` from a mapping (a TOML table, a JSON/YAML object...).

    Known fields (:data:`SPEC_FIELDS`) fill the spec; ``container`` is ``bucket`` for
    Azure; every other entry is a backend option, merged with the ``options`` table.
    ``key`` is used when the mapping has none (e.g. a table keyed by backend key).
    """
    if not isinstance(data, Mapping):
        raise spec_error(
            key,
            source,
            "backend",
            f"expected a table/object, got {type(data).__name__}",
            fix="Each backend is a table with at least key and type (or url)",
        )
    values: dict[str, Any] = {}
    options: dict[str, Any] = {}
    explicit_options: Any = {}
    for name, value in data.items():
        name = str(name)
        if name == "options":
            explicit_options = value
        elif name == "container":
            if data.get("bucket") is not None:
                raise spec_error(
                    data.get("key", key),
                    source,
                    "container",
                    "given together with bucket",
                    fix="Give the container name once",
                )
            values["bucket"] = value
        elif name in SPEC_FIELDS:
            values[name] = value
        else:
            options[name] = value
    spec_key = values.pop("key", key)
    if isinstance(explicit_options, str):
        explicit_options = parse_json_object(explicit_options, spec_key, "options", source)
    if not isinstance(explicit_options, Mapping):
        raise spec_error(
            spec_key,
            source,
            "options",
            f"expected a table/object, got {type(explicit_options).__name__}",
        )
    for name in set(options) & set(explicit_options):
        raise spec_error(
            spec_key,
            source,
            f"options.{name}",
            "given both in options and next to it",
            fix="Set it once",
        )
    options.update(explicit_options)
    if "default" in values and isinstance(values["default"], str):
        values["default"] = parse_bool(values["default"], spec_key, "default", source)
    if values.get("prefix") is None:
        values.pop("prefix", None)
    return BackendSpec(key=spec_key, options=options, source=source, **values)
