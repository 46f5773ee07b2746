"""The one format every configuration source produces: :class:`BackendSpec`.

Environment variables, TOML/JSON/YAML files, pydantic settings and dataclasses are all turned
into :class:`BackendSpec` values; this module validates them, builds each into a backend and
registers them. Nothing here does I/O except building a local backend (which creates its
directory); cloud backends are built without a network request.
"""

from __future__ import annotations

import importlib
import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from storeroom.backends.obstore.options import STORE_KINDS, store_kind
from storeroom.config.masking import (
    MASK,
    mask_url,
    masked,
    masked_mapping,
    redact,
    reveal,
    secret_values,
    url_secrets,
)
from storeroom.errors import ConfigurationError
from storeroom.registry import StorageRegistry, storages

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
    "register_specs",
    "spec_from_mapping",
]

logger = logging.getLogger("storeroom.config")

#: Accepted ``type`` values -> canonical type.
TYPE_ALIASES: Mapping[str, str] = {
    "s3": "s3",
    "minio": "minio",
    "gcs": "gcs",
    "gs": "gcs",
    "azure": "azure",
    "az": "azure",
    "local": "local",
    "file": "local",
    "memory": "memory",
    "fsspec": "fsspec",
}
_TYPE_CHOICES = "s3, minio, gcs (or gs), azure (or az), local (or file), memory, fsspec"
_URL_SCHEME = {"s3": "s3", "minio": "s3", "gcs": "gs", "azure": "az"}
_ENDPOINT_OPTION = {
    "s3": "aws_endpoint",
    "minio": "aws_endpoint",
    "gcs": "google_base_url",
    "azure": "azure_storage_endpoint",
}
_ALLOW_HTTP_OPTION = {
    "s3": "aws_allow_http",
    "minio": "aws_allow_http",
    "gcs": "google_allow_http",
    "azure": "azure_allow_http",
}
_MINIO_DEFAULT_ENDPOINT = "http://localhost:9000"
_MINIO_DEFAULT_REGION = "us-east-1"

#: Settings applied after the backend is built: HMAC URL signing, retry policy, timeout.
RESERVED_FIELDS = ("signing_secret", "signing_base_url", "retry", "timeout")

#: Every field a spec mapping may hold; any other entry is a backend option.
SPEC_FIELDS = (
    "key", "type", "url", "bucket", "container", "prefix", "region", "endpoint", "path",
    "protocol", "options", "default", *RESERVED_FIELDS,
)

# Which of the location fields apply to which type (``key``/``options``/``default`` and the
# reserved fields apply to all).
_APPLIES: Mapping[str, frozenset[str]] = {
    "s3": frozenset({"bucket", "prefix", "region", "endpoint"}),
    "minio": frozenset({"bucket", "prefix", "region", "endpoint"}),
    "gcs": frozenset({"bucket", "prefix", "endpoint"}),
    "azure": frozenset({"bucket", "prefix", "endpoint"}),
    "local": frozenset({"path", "prefix"}),
    "memory": frozenset(),
    "fsspec": frozenset({"protocol", "bucket", "prefix"}),
    "url": frozenset({"url", "region", "endpoint"}),
}
_LOCATION_FIELDS = ("url", "bucket", "prefix", "region", "endpoint", "path", "protocol")


class InvalidBackendSpec(ConfigurationError):
    """A backend specification is invalid.

    The message names the backend key, the field, the bad value (masked when secret), what
    would be valid and where the specification came from; the same facts are attributes.
    """

    def __init__(
        self,
        message: str,
        *,
        key: str | None = None,
        field: str | None = None,
        source: str | None = None,
    ) -> None:
        super().__init__(message)
        self.key = key
        self.field = field
        self.source = source


def _field_value(name: str, value: Any) -> Any:
    """A spec field's value as it may be shown (``options`` entries masked by name)."""
    if name == "signing_secret" and value is not None:
        return MASK
    if name == "options" and isinstance(value, Mapping):
        return masked_mapping(value)
    if name in ("url", "signing_base_url", "endpoint") and isinstance(value, str):
        return mask_url(value)
    if name.startswith("options."):
        return masked(name.removeprefix("options."), value)
    return value


def _shown(name: str, value: Any) -> str:
    return repr(_field_value(name, value))


def spec_error(
    key: str | None, source: str | None, field: str, problem: str, *, fix: str = ""
) -> InvalidBackendSpec:
    """An :class:`InvalidBackendSpec` whose message has the standard shape.

    ``backend 'docs' (from config.toml, storage.backends[0]): field 'type': <problem>. <fix>``
    """
    who = f"backend {key!r}" if key else "backend"
    where = f" (from {source})" if source else ""
    message = f"{who}{where}: field {field!r}: {problem}"
    if fix:
        message += f". {fix}"
    return InvalidBackendSpec(message, key=key, field=field, source=source)


@dataclass(slots=True, repr=False)
class BackendSpec:
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

    Reserved for features built elsewhere (accepted, loosely checked and kept, not used by
    this module): ``signing_secret`` and ``signing_base_url`` (HMAC-signed URLs for stores
    that cannot sign), ``retry`` and ``timeout``.

    ``source`` says where the spec came from, for error messages. Secrets (options named
    like keys, tokens, passwords, connection strings, and ``signing_secret``) are shown as
    ``'***'`` in ``repr()`` and in every error message.
    """

    key: str
    type: str | None = None
    url: str | None = None
    bucket: str | None = None
    prefix: str = ""
    region: str | None = None
    endpoint: str | None = None
    path: str | None = None
    protocol: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    default: bool = False
    signing_secret: Any = None
    signing_base_url: str | None = None
    retry: Any = None
    timeout: Any = None
    source: str | None = None

    def __post_init__(self) -> None:
        self._validate()

    # -- presentation ---------------------------------------------------------------------

    def __repr__(self) -> str:
        shown = []
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "key" or (value not in (None, "", {}, False)):
                shown.append(f"{f.name}={_shown(f.name, value)}")
        return f"BackendSpec({', '.join(shown)})"

    __str__ = __repr__

    def masked(self) -> dict[str, Any]:
        """The spec as a dict, secrets replaced by ``'***'`` (safe to log or print)."""
        return {
            f.name: _field_value(f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) not in (None, "", {}, False)
        }

    @property
    def kind(self) -> str:
        """The canonical type: one of :data:`TYPE_ALIASES`' values, or ``'url'``."""
        return self.type or "url"

    def _secrets(self) -> list[str]:
        found = secret_values(self.options) + url_secrets(self.url)
        if self.signing_secret is not None:
            found.append(str(reveal(self.signing_secret)))
        return found

    def _error(self, field: str, problem: str, fix: str = "") -> InvalidBackendSpec:
        return spec_error(self.key, self.source, field, problem, fix=fix)

    # -- validation -----------------------------------------------------------------------

    def _validate(self) -> None:
        if not isinstance(self.key, str) or not self.key.strip():
            raise spec_error(
                None, self.source, "key", f"got {self.key!r}",
                fix="Every backend needs a non-empty string key, e.g. key = \"documents\"",
            )
        self._validate_type()
        kind = self.kind
        for name in _LOCATION_FIELDS:
            value = getattr(self, name)
            if value in (None, ""):
                continue
            if not isinstance(value, str):
                raise self._error(name, f"expected a string, got {type(value).__name__} "
                                  f"{_shown(name, value)}")
            if name not in _APPLIES[kind]:
                valid = ", ".join(sorted(_APPLIES[kind])) or "none"
                raise self._error(
                    name, f"{_shown(name, value)} does not apply to type {kind!r}",
                    f"Fields for {kind!r}: {valid}",
                )
        self._validate_location()
        self._validate_options()
        self._validate_reserved()
        if not isinstance(self.default, bool):
            raise self._error("default", f"expected true or false, got {self.default!r}")

    def _validate_type(self) -> None:
        if self.type is None:
            if not self.url:
                raise self._error(
                    "type", "missing (and no url given)",
                    f"Set type to one of: {_TYPE_CHOICES}; or give a url such as "
                    "'s3://bucket/prefix'",
                )
            return
        if not isinstance(self.type, str) or self.type.lower() not in TYPE_ALIASES:
            raise self._error(
                "type", f"{self.type!r} is not a supported backend type",
                f"Valid types: {_TYPE_CHOICES}; or give a url instead",
            )
        self.type = TYPE_ALIASES[self.type.lower()]
        if self.url:
            url_kind = _url_type(self.url)
            expected = "s3" if self.type == "minio" else self.type
            if url_kind != expected:
                raise self._error(
                    "url", f"{_shown('url', self.url)} is a {url_kind} URL but type is "
                    f"{self.type!r}",
                    "Give either the type and its fields, or only the url",
                )
            # With a url the location comes from it; the type only cross-checks it.
            self.type = None

    def _validate_location(self) -> None:
        kind = self.kind
        if kind in _URL_SCHEME:
            if not self.bucket:
                noun = "container" if kind == "azure" else "bucket"
                raise self._error(
                    "bucket", f"missing; type {kind!r} needs the {noun} name",
                    f"Set bucket = \"my-{noun}\" (or bucket = \"{_URL_SCHEME[kind]}://my-"
                    f"{noun}/\"), or give url = \"{_URL_SCHEME[kind]}://my-{noun}/prefix\"",
                )
            if "://" in self.bucket:
                scheme = self.bucket.split("://", 1)[0].lower()
                if STORE_KINDS.get(scheme) != ("s3" if kind == "minio" else kind):
                    raise self._error(
                        "bucket", f"{self.bucket!r} is not a {kind} bucket URL",
                        f"Use a bucket name or a {_URL_SCHEME[kind]}:// URL",
                    )
        elif kind == "local" and not self.path:
            raise self._error(
                "path", "missing; type 'local' needs the directory to store files in",
                "Set path = \"/var/app/uploads\"",
            )
        elif kind == "fsspec" and not self.protocol:
            raise self._error(
                "protocol", "missing; type 'fsspec' needs the fsspec protocol",
                "Set protocol = \"file\", \"memory\", \"s3\", \"gcs\", \"az\", ...",
            )
        if kind == "url":
            url_kind = _url_type(self.url or "", spec=self)
            for name, kinds in (("region", ("s3",)), ("endpoint", tuple(_ENDPOINT_OPTION))):
                if getattr(self, name) and url_kind not in kinds:
                    raise self._error(
                        name, f"{_shown(name, getattr(self, name))} does not apply to a "
                        f"{url_kind} URL", f"Only {', '.join(kinds)} URLs take a {name}",
                    )

    def _validate_options(self) -> None:
        if isinstance(self.options, str):
            self.options = parse_json_object(self.options, self.key, "options", self.source)
        if not isinstance(self.options, Mapping):
            raise self._error(
                "options", f"expected a table/object of option names to values, got "
                f"{type(self.options).__name__}",
            )
        for name in self.options:
            if not isinstance(name, str) or not name:
                raise self._error("options", f"option names must be strings, got {name!r}")
            if name in SPEC_FIELDS and name != "timeout":
                raise self._error(
                    f"options.{name}", f"{name!r} is a field of the spec, not an option",
                    f"Set {name} next to key and type instead",
                )
        self.options = dict(self.options)

    def _validate_reserved(self) -> None:
        if self.signing_secret is not None:
            secret = reveal(self.signing_secret)
            if not isinstance(secret, str) or not secret:
                raise self._error(
                    "signing_secret", "expected a non-empty string (value not shown)"
                )
        if self.signing_base_url is not None:
            scheme = urlsplit(str(self.signing_base_url)).scheme
            if not isinstance(self.signing_base_url, str) or scheme not in ("http", "https"):
                raise self._error(
                    "signing_base_url", f"{_shown('signing_base_url', self.signing_base_url)}"
                    " is not an http(s) URL", "Use e.g. \"https://app.example.com/files\"",
                )
        if self.retry is not None:
            if isinstance(self.retry, str):
                self.retry = parse_json_object(self.retry, self.key, "retry", self.source)
            if not isinstance(self.retry, Mapping | int) or isinstance(self.retry, bool):
                raise self._error(
                    "retry", f"expected a table of retry settings or a number of attempts, "
                    f"got {self.retry!r}",
                )
        if self.timeout is not None:
            timeout = self.timeout
            if isinstance(timeout, str):
                try:
                    timeout = float(timeout)
                except ValueError:
                    timeout = timeout.strip()
            if isinstance(timeout, bool) or not (
                (isinstance(timeout, int | float) and timeout > 0)
                or (isinstance(timeout, str) and timeout)
            ):
                raise self._error(
                    "timeout", f"expected a positive number of seconds or a duration such "
                    f"as '30s', got {self.timeout!r}",
                )
            self.timeout = timeout

    # -- building -------------------------------------------------------------------------

    def _odd_values_hint(self) -> str:
        odd = [
            f"{name}={_shown('options.' + name, value)}"
            for name, value in self.options.items()
            if not isinstance(reveal(value), str | bool | Mapping)
        ]
        if not odd:
            return ""
        return f"; field 'options': check {', '.join(odd)} (store options are strings)"

    def backend_options(self) -> dict[str, Any]:
        """The keyword options the backend is built with (secrets in the clear)."""
        options = {name: reveal(value) for name, value in self.options.items()}
        kind = self.kind if self.url is None else _url_type(self.url)
        endpoint: str | None = self.endpoint
        region: str | None = self.region
        if kind == "minio":
            endpoint = endpoint or _MINIO_DEFAULT_ENDPOINT
            region = region or _MINIO_DEFAULT_REGION
        if region is not None:
            self._merge(options, "region", "aws_region", region)
        if endpoint is not None:
            self._merge(options, "endpoint", _ENDPOINT_OPTION[kind], endpoint)
            allow = _ALLOW_HTTP_OPTION[kind]
            if endpoint.lower().startswith("http://") and not any(
                n in options for n in (allow, "allow_http", "client_options")
            ):
                options[allow] = True
        return options

    def _merge(self, options: dict[str, Any], field: str, option: str, value: Any) -> None:
        if option in options and options[option] != value:
            raise self._error(
                field, f"{value!r} conflicts with option {option}={options[option]!r}",
                f"Set it once, either as {field} or as the option {option}",
            )
        options[option] = value

    def location_url(self) -> str:
        """The URL (or fsspec protocol and prefix) the backend is built for."""
        kind = self.kind
        prefix = self.prefix.strip("/")
        if kind == "url":
            return self.url or ""
        if kind in _URL_SCHEME:
            bucket = self.bucket or ""
            if "://" in bucket:
                bucket = bucket.split("://", 1)[1]
            base = f"{_URL_SCHEME[kind]}://{bucket.strip('/')}/"
            return base + (prefix + "/" if prefix else "")
        if kind == "local":
            root = Path(self.path or ".").expanduser().resolve()
            return (root / prefix).as_uri() if prefix else root.as_uri()
        if kind == "memory":
            return "memory://"
        bucket = (self.bucket or "").split("://", 1)[-1].strip("/")
        return f"{self.protocol}://" + "/".join(p for p in (bucket, prefix) if p)

    def _tuning(self) -> dict[str, Any]:
        """``retry`` and ``timeout`` for an obstore backend (fsspec takes neither option)."""
        tuning: dict[str, Any] = {}
        url_kind = urlsplit(self.url).scheme if self.kind == "url" and self.url else None
        if url_kind is not None and url_kind not in STORE_KINDS:
            return tuning
        if self.retry is not None:
            tuning["retry"] = self.retry
        if self.timeout is not None:
            tuning["timeout"] = self.timeout
        return tuning

    def build(self) -> StorageBackend:
        """Build the backend this spec describes (does not register it).

        Raises :class:`InvalidBackendSpec` when the backend rejects the spec, e.g. an option
        it does not accept; the message names the key, the option and what is valid.
        """
        try:
            if self.kind == "fsspec":
                backend = _fsspec_backend(self)
            elif self.kind == "url":
                backend = backend_from_url(
                    self.key, self.url or "", **self.backend_options(), **self._tuning()
                )
            else:
                from storeroom.backends.obstore import ObstoreBackend

                backend = ObstoreBackend(
                    self.key, self.location_url(), **self.backend_options(), **self._tuning()
                )
            if self.retry is not None:
                # Backends that retry natively got it at construction; the rest read it here.
                from storeroom.retry import RetryPolicy

                backend.retry = RetryPolicy.from_value(self.retry)
            if self.signing_secret is not None:
                from storeroom.signing import configure_signing

                if not self.signing_base_url:
                    raise self._error(
                        "signing_base_url",
                        "is required with signing_secret: the URL where storeroom's web "
                        "handler is mounted",
                        "e.g. signing_base_url = 'https://app.example.com/files'",
                    )
                secrets = reveal(self.signing_secret)
                configure_signing(
                    backend,
                    secret=secrets.split(",") if isinstance(secrets, str) else secrets,
                    base_url=self.signing_base_url,
                )
            return backend
        except InvalidBackendSpec:
            raise
        except ConfigurationError as exc:
            message = redact(str(exc), self._secrets())
            where = f" (from {self.source})" if self.source else ""
            if self.key not in message:
                message = f"backend {self.key!r}: {message}"
            if "invalid option value" in message:
                message += self._odd_values_hint()
            raise InvalidBackendSpec(
                message + where, key=self.key, field=_option_in(message), source=self.source
            ) from exc


def _option_in(message: str) -> str:
    marker = "option '"
    if marker in message:
        return "options." + message.split(marker, 1)[1].split("'", 1)[0]
    return "options"


def _fsspec_backend(spec: BackendSpec) -> StorageBackend:
    try:
        from storeroom.backends.fsspec import FSSpecBackend
    except ImportError as exc:
        raise spec._error(
            "type", "'fsspec' needs the fsspec package, which is not installed",
            "pip install 'storeroom[fsspec]'",
        ) from exc
    bucket = (spec.bucket or "").split("://", 1)[-1].strip("/")
    prefix = "/".join(p for p in (bucket, spec.prefix.strip("/")) if p)
    if spec.protocol in ("file", "local") and spec.prefix.startswith("/") and not bucket:
        prefix = spec.prefix
    return FSSpecBackend(spec.key, spec.protocol or "", prefix=prefix, **spec.backend_options())


def _url_type(url: str, spec: BackendSpec | None = None) -> str:
    """The spec type a URL selects: an obstore kind ('s3', 'gcs', ...), 'fsspec' or 'local'."""
    scheme = urlsplit(url).scheme.lower() if "://" in url else ""
    if not scheme:
        return "local"
    if scheme.startswith("fsspec+"):
        return "fsspec"
    if scheme in STORE_KINDS:
        return STORE_KINDS[scheme]
    if _fsspec_knows(scheme):
        return "fsspec"
    valid = ", ".join(f"{s}://" for s in STORE_KINDS)
    problem = f"{masked('url', url)!r} has an unsupported scheme {scheme + '://'!r}"
    fix = f"Use one of {valid}, a local path, or an fsspec protocol (fsspec+<protocol>://...)"
    if spec is not None:
        raise spec._error("url", problem, fix)
    raise InvalidBackendSpec(f"{problem}. {fix}", field="url")


def _fsspec_knows(protocol: str) -> bool:
    try:
        fsspec_registry = importlib.import_module("fsspec.registry")
    except ImportError:
        return False
    return (
        protocol in fsspec_registry.known_implementations
        or protocol in fsspec_registry.registry
    )


def backend_from_url(key: str, url: str, **options: Any) -> StorageBackend:
    """Build the backend a URL names, choosing the backend type from its scheme.

    - ``s3://``, ``gs://``, ``az://`` (``abfs://``, ...), ``file://``, ``memory://``,
      ``http(s)://``: an :class:`~storeroom.backends.obstore.ObstoreBackend`.
    - A plain path (``/var/app/uploads``, ``./uploads``): an ObstoreBackend on that
      directory, created when missing.
    - ``fsspec+<protocol>://rest`` or any other protocol fsspec knows (``sftp://``,
      ``webdav://``...): an :class:`~storeroom.backends.fsspec.FSSpecBackend` for that
      protocol with prefix ``rest``.

    ``options`` go to the backend (obstore option names for obstore URLs, storage options
    for fsspec). Raises :class:`~storeroom.errors.ConfigurationError` for an unsupported
    scheme or an option the backend does not accept.

    Example::

        backend_from_url("docs", "s3://company-documents/", aws_region="us-west-2")
    """
    from storeroom.backends.obstore import ObstoreBackend

    kind = _url_type(url)
    if kind == "local" and not url.lower().startswith("file:"):
        return ObstoreBackend(key, Path(url).expanduser().resolve().as_uri(), **options)
    if kind != "fsspec":
        store_kind(url)
        return ObstoreBackend(key, url, **options)
    try:
        from storeroom.backends.fsspec import FSSpecBackend
    except ImportError as exc:
        raise ConfigurationError(
            f"backend {key!r}: {masked('url', url)!r} needs fsspec: "
            "pip install 'storeroom[fsspec]'"
        ) from exc
    scheme, _, rest = url.partition("://")
    protocol = scheme.lower().removeprefix("fsspec+")
    return FSSpecBackend(key, protocol, prefix=rest, **options)


def parse_json_object(text: str, key: str | None, field: str, source: str | None) -> dict[str, Any]:
    """Parse ``text`` as a JSON object; errors name the key and field, never the text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise spec_error(
            key, source, field,
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; value not "
            "shown as it may hold secrets)",
            fix='Expected a JSON object such as {"aws_region": "us-east-1"}',
        ) from None
    if not isinstance(value, dict):
        raise spec_error(
            key, source, field, f"expected a JSON object, got a JSON {type(value).__name__}",
            fix='Write it as {"option_name": value, ...}',
        )
    return value


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
            key, source, "backend", f"expected a table/object, got {type(data).__name__}",
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
                    data.get("key", key), source, "container",
                    "given together with bucket", fix="Give the container name once",
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
            spec_key, source, "options",
            f"expected a table/object, got {type(explicit_options).__name__}",
        )
    for name in set(options) & set(explicit_options):
        raise spec_error(
            spec_key, source, f"options.{name}", "given both in options and next to it",
            fix="Set it once",
        )
    options.update(explicit_options)
    if "default" in values and isinstance(values["default"], str):
        values["default"] = parse_bool(values["default"], spec_key, "default", source)
    if values.get("prefix") is None:
        values.pop("prefix", None)
    return BackendSpec(key=spec_key, options=options, source=source, **values)


_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_bool(text: str, key: str | None, field: str, source: str | None) -> bool:
    """Parse an environment-style boolean (true/false, 1/0, yes/no, on/off)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise spec_error(key, source, field, f"{text!r} is not a boolean",
                     fix="Use true or false (or 1/0, yes/no, on/off)")


def build_backends(specs: Iterable[BackendSpec]) -> list[StorageBackend]:
    """Build every spec's backend; fails on the first invalid one, before any is used.

    Raises :class:`InvalidBackendSpec` when two specs share a key.
    """
    specs = list(specs)
    seen: dict[str, BackendSpec] = {}
    for spec in specs:
        if spec.key in seen:
            first = seen[spec.key]
            raise spec_error(
                spec.key, spec.source, "key",
                f"{spec.key!r} is defined twice (also from {first.source or 'code'})",
                fix="Give each backend its own key",
            )
        seen[spec.key] = spec
    return [spec.build() for spec in specs]


def register_specs(
    specs: Iterable[BackendSpec],
    registry: StorageRegistry | None = None,
    *,
    overwrite: bool = False,
) -> list[StorageBackend]:
    """Build and register every spec's backend; returns the backends.

    All backends are built first, so an invalid spec registers nothing. A spec with
    ``default=True`` becomes the registry's default. ``registry`` defaults to ``storages``.
    Raises :class:`~storeroom.errors.BackendAlreadyRegistered` for a key already registered
    (unless ``overwrite=True``).
    """
    registry = storages if registry is None else registry
    specs = list(specs)
    backends = build_backends(specs)
    if not overwrite:
        for backend in backends:
            if backend.key in registry:
                # Raise the registry's own error before anything is registered.
                registry.register_backend(backend)
    for spec, backend in zip(specs, backends, strict=True):
        registry.register_backend(backend, overwrite=overwrite, default=spec.default)
        logger.info(
            "registered storage backend %r at %s (from %s)",
            backend.key, backend.location, spec.source or "code",
        )
    return backends
