"""Validating a :class:`~storeroom.config.spec.BackendSpec`: every check, no I/O.

:func:`validate_spec` checks a spec's fields and normalises them in place (the type's
canonical name, ``options``/``retry`` given as JSON text parsed, a numeric ``timeout``);
it raises :class:`~storeroom.config.errors.InvalidBackendSpec` naming the field, the bad
value (masked when secret) and what is valid. :func:`parse_json_object` and
:func:`parse_bool` read the text forms environment variables use.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from storeroom import checksums
from storeroom.backends.obstore.options import STORE_KINDS
from storeroom.config.errors import InvalidBackendSpec, shown, spec_error
from storeroom.config.urls import ENDPOINT_OPTION, URL_SCHEME, url_type
from storeroom.errors import ConfigurationError
from storeroom.masking import reveal

if TYPE_CHECKING:
    from storeroom.config.specdata import SpecData

__all__ = [
    "LOCATION_FIELDS",
    "RESERVED_FIELDS",
    "SPEC_FIELDS",
    "TYPE_ALIASES",
    "parse_bool",
    "parse_json_object",
    "validate_spec",
]

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

#: Settings applied after the backend is built: HMAC URL signing, retry policy, timeout,
#: and the digest new saves record (``checksum_algorithm``, see :mod:`storeroom.checksums`).
RESERVED_FIELDS = ("signing_secret", "signing_base_url", "retry", "timeout", "checksum_algorithm")

#: Every field a spec mapping may hold; any other entry is a backend option.
SPEC_FIELDS = (
    "key",
    "type",
    "url",
    "bucket",
    "container",
    "prefix",
    "region",
    "endpoint",
    "path",
    "protocol",
    "options",
    "default",
    *RESERVED_FIELDS,
)

#: The fields that say where a backend stores (each applies to some types only).
LOCATION_FIELDS = ("url", "bucket", "prefix", "region", "endpoint", "path", "protocol")

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

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off", ""})


def parse_json_object(text: str, key: str | None, field: str, source: str | None) -> dict[str, Any]:
    """Parse ``text`` as a JSON object; errors name the key and field, never the text."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise spec_error(
            key,
            source,
            field,
            f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}; value not "
            "shown as it may hold secrets)",
            fix='Expected a JSON object such as {"aws_region": "us-east-1"}',
        ) from None
    if not isinstance(value, dict):
        raise spec_error(
            key,
            source,
            field,
            f"expected a JSON object, got a JSON {type(value).__name__}",
            fix='Write it as {"option_name": value, ...}',
        )
    return value


def parse_bool(text: str, key: str | None, field: str, source: str | None) -> bool:
    """Parse an environment-style boolean (true/false, 1/0, yes/no, on/off)."""
    lowered = text.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise spec_error(
        key,
        source,
        field,
        f"{text!r} is not a boolean",
        fix="Use true or false (or 1/0, yes/no, on/off)",
    )


def _error(spec: SpecData, field: str, problem: str, fix: str = "") -> InvalidBackendSpec:
    return spec_error(spec.key, spec.source, field, problem, fix=fix)


def validate_spec(spec: SpecData) -> None:
    """Check every field of ``spec`` and normalise it in place.

    Raises :class:`~storeroom.config.errors.InvalidBackendSpec` for the first problem.
    """
    if not isinstance(spec.key, str) or not spec.key.strip():
        raise spec_error(
            None,
            spec.source,
            "key",
            f"got {spec.key!r}",
            fix='Every backend needs a non-empty string key, e.g. key = "documents"',
        )
    _validate_type(spec)
    kind = spec.kind
    for name in LOCATION_FIELDS:
        value = getattr(spec, name)
        if value in (None, ""):
            continue
        if not isinstance(value, str):
            raise _error(
                spec, name, f"expected a string, got {type(value).__name__} {shown(name, value)}"
            )
        if name not in _APPLIES[kind]:
            valid = ", ".join(sorted(_APPLIES[kind])) or "none"
            raise _error(
                spec,
                name,
                f"{shown(name, value)} does not apply to type {kind!r}",
                f"Fields for {kind!r}: {valid}",
            )
    _validate_location(spec)
    _validate_options(spec)
    _validate_reserved(spec)
    if not isinstance(spec.default, bool):
        raise _error(spec, "default", f"expected true or false, got {spec.default!r}")


def _validate_type(spec: SpecData) -> None:
    if spec.type is None:
        if not spec.url:
            raise _error(
                spec,
                "type",
                "missing (and no url given)",
                f"Set type to one of: {_TYPE_CHOICES}; or give a url such as 's3://bucket/prefix'",
            )
        return
    if not isinstance(spec.type, str) or spec.type.lower() not in TYPE_ALIASES:
        raise _error(
            spec,
            "type",
            f"{spec.type!r} is not a supported backend type",
            f"Valid types: {_TYPE_CHOICES}; or give a url instead",
        )
    spec.type = TYPE_ALIASES[spec.type.lower()]
    if spec.url:
        url_kind = url_type(spec.url)
        expected = "s3" if spec.type == "minio" else spec.type
        if url_kind != expected:
            raise _error(
                spec,
                "url",
                f"{shown('url', spec.url)} is a {url_kind} URL but type is {spec.type!r}",
                "Give either the type and its fields, or only the url",
            )
        # With a url the location comes from it; the type only cross-checks it.
        spec.type = None


def _validate_location(spec: SpecData) -> None:
    kind = spec.kind
    if kind in URL_SCHEME:
        if not spec.bucket:
            noun = "container" if kind == "azure" else "bucket"
            raise _error(
                spec,
                "bucket",
                f"missing; type {kind!r} needs the {noun} name",
                f'Set bucket = "my-{noun}" (or bucket = "{URL_SCHEME[kind]}://my-'
                f'{noun}/"), or give url = "{URL_SCHEME[kind]}://my-{noun}/prefix"',
            )
        if "://" in spec.bucket:
            scheme = spec.bucket.split("://", 1)[0].lower()
            if STORE_KINDS.get(scheme) != ("s3" if kind == "minio" else kind):
                raise _error(
                    spec,
                    "bucket",
                    f"{spec.bucket!r} is not a {kind} bucket URL",
                    f"Use a bucket name or a {URL_SCHEME[kind]}:// URL",
                )
    elif kind == "local" and not spec.path:
        raise _error(
            spec,
            "path",
            "missing; type 'local' needs the directory to store files in",
            'Set path = "/var/app/uploads"',
        )
    elif kind == "fsspec" and not spec.protocol:
        raise _error(
            spec,
            "protocol",
            "missing; type 'fsspec' needs the fsspec protocol",
            'Set protocol = "file", "memory", "s3", "gcs", "az", ...',
        )
    if kind == "url":
        url_kind = url_type(spec.url or "", key=spec.key, source=spec.source, in_spec=True)
        for name, kinds in (("region", ("s3",)), ("endpoint", tuple(ENDPOINT_OPTION))):
            if getattr(spec, name) and url_kind not in kinds:
                raise _error(
                    spec,
                    name,
                    f"{shown(name, getattr(spec, name))} does not apply to a {url_kind} URL",
                    f"Only {', '.join(kinds)} URLs take a {name}",
                )


def _validate_options(spec: SpecData) -> None:
    if isinstance(spec.options, str):
        spec.options = parse_json_object(spec.options, spec.key, "options", spec.source)
    if not isinstance(spec.options, Mapping):
        raise _error(
            spec,
            "options",
            f"expected a table/object of option names to values, got {type(spec.options).__name__}",
        )
    for name in spec.options:
        if not isinstance(name, str) or not name:
            raise _error(spec, "options", f"option names must be strings, got {name!r}")
        if name in SPEC_FIELDS and name != "timeout":
            fix = f"Set {name} next to key and type instead"
            if name == "checksum_algorithm":
                # S3 store option of the same name: the server-verified upload checksum.
                fix += " (S3's own upload checksum is the option aws_checksum_algorithm)"
            raise _error(
                spec, f"options.{name}", f"{name!r} is a field of the spec, not an option", fix
            )
    spec.options = dict(spec.options)


def _validate_reserved(spec: SpecData) -> None:
    if spec.signing_secret is not None:
        secret = reveal(spec.signing_secret)
        if not isinstance(secret, str) or not secret:
            raise _error(spec, "signing_secret", "expected a non-empty string (value not shown)")
    if spec.signing_base_url is not None:
        scheme = urlsplit(str(spec.signing_base_url)).scheme
        if not isinstance(spec.signing_base_url, str) or scheme not in ("http", "https"):
            raise _error(
                spec,
                "signing_base_url",
                f"{shown('signing_base_url', spec.signing_base_url)} is not an http(s) URL",
                'Use e.g. "https://app.example.com/files"',
            )
    if spec.retry is not None:
        if isinstance(spec.retry, str):
            spec.retry = parse_json_object(spec.retry, spec.key, "retry", spec.source)
        if not isinstance(spec.retry, Mapping | int) or isinstance(spec.retry, bool):
            raise _error(
                spec,
                "retry",
                f"expected a table of retry settings or a number of attempts, got {spec.retry!r}",
            )
    if spec.timeout is not None:
        spec.timeout = _timeout(spec)
    if spec.checksum_algorithm is not None:
        spec.checksum_algorithm = _checksum_algorithm(spec)


def _checksum_algorithm(spec: SpecData) -> str:
    value = spec.checksum_algorithm
    fix = "Name the digest new saves record, e.g. 'blake3' (the default), 'sha256' or 'xxh3-128'"
    if not isinstance(value, str) or not value.strip():
        raise _error(spec, "checksum_algorithm", f"expected an algorithm name, got {value!r}", fix)
    try:
        return checksums.check_algorithm(value.strip())
    except ConfigurationError as exc:
        raise _error(spec, "checksum_algorithm", str(exc)) from exc


def _timeout(spec: SpecData) -> Any:
    timeout = spec.timeout
    if isinstance(timeout, str):
        try:
            timeout = float(timeout)
        except ValueError:
            timeout = timeout.strip()
    if isinstance(timeout, bool) or not (
        (isinstance(timeout, int | float) and timeout > 0) or (isinstance(timeout, str) and timeout)
    ):
        raise _error(
            spec,
            "timeout",
            f"expected a positive number of seconds or a duration such "
            f"as '30s', got {spec.timeout!r}",
        )
    return timeout
