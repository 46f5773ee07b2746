"""CORS rules for browsers that upload to and download from signed URLs directly.

:class:`CorsRules` holds one rule in the shape of S3's ``CORSRules`` entries (allowed
origins, methods, headers, exposed headers, max age); its defaults are the specification's
direct-upload rule: methods GET, PUT and POST, any request header, ``ETag`` exposed, 3000 s.

Two pure functions answer CORS for storeroom's own HMAC signed-URL handler, which serves
local-disk and memory backends: :func:`preflight_headers` for an ``OPTIONS`` preflight and
:func:`response_headers` for the actual request. Writing these rules to a bucket is
provider code: :mod:`storeroom.backends.obstore.bucket_cors`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from storeroom.errors import ConfigurationError

__all__ = [
    "CORS_METHODS",
    "CorsRules",
    "preflight_headers",
    "response_headers",
]

#: Methods a CORS rule may allow (what S3 and Azure accept).
CORS_METHODS = ("GET", "PUT", "POST", "DELETE", "HEAD")


def _strings(value: str | Iterable[str], what: str) -> tuple[str, ...]:
    items = (value,) if isinstance(value, str) else tuple(value)
    if any(not isinstance(item, str) for item in items):
        raise ConfigurationError(f"CORS {what} must be strings, got {items!r}")
    return tuple(item.strip() for item in items if item.strip())


@dataclass(frozen=True, slots=True)
class CorsRules:
    """One CORS rule: which origins may use which methods and headers.

    Args:
        allowed_origins: Origins such as ``"https://app.example.com"``; ``"*"`` allows any,
            and one ``*`` inside an origin matches any text (``"https://*.example.com"``).
        allowed_methods: HTTP methods allowed cross-origin (default GET, PUT, POST).
        allowed_headers: Request headers a browser may send (default ``"*"``, any);
            ``*`` inside a name matches any text (``"x-amz-*"``). Matching ignores case.
        expose_headers: Response headers scripts may read (default ``ETag``, which
            multipart uploads need).
        max_age_seconds: How long browsers may cache a preflight answer (default 3000).

    Raises:
        ConfigurationError: no origin, an unknown method or a negative max age.
    """

    allowed_origins: tuple[str, ...]
    allowed_methods: tuple[str, ...] = ("GET", "PUT", "POST")
    allowed_headers: tuple[str, ...] = ("*",)
    expose_headers: tuple[str, ...] = ("ETag",)
    max_age_seconds: int = 3000

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "allowed_origins", _strings(self.allowed_origins, "origins"))
        methods = tuple(m.upper() for m in _strings(self.allowed_methods, "methods"))
        set_(self, "allowed_methods", methods)
        set_(self, "allowed_headers", _strings(self.allowed_headers, "headers"))
        set_(self, "expose_headers", _strings(self.expose_headers, "expose headers"))
        if not self.allowed_origins:
            raise ConfigurationError(
                "a CORS rule needs at least one allowed origin, e.g. 'https://app.example.com'"
            )
        for origin in self.allowed_origins:
            if origin.count("*") > 1:
                raise ConfigurationError(
                    f"CORS origin {origin!r} has more than one '*'; S3 allows one wildcard"
                )
        unknown = [m for m in methods if m not in CORS_METHODS]
        if unknown or not methods:
            raise ConfigurationError(
                f"CORS methods {', '.join(unknown) or '(none)'} are not allowed; choose from "
                f"{', '.join(CORS_METHODS)}"
            )
        if int(self.max_age_seconds) < 0:
            raise ConfigurationError(
                f"CORS max age must be 0 or more seconds, got {self.max_age_seconds!r}"
            )
        set_(self, "max_age_seconds", int(self.max_age_seconds))

    # -- matching -----------------------------------------------------------------------------

    def allows_origin(self, origin: str) -> bool:
        """Whether ``origin`` (the request's ``Origin`` header) is allowed."""
        return any(
            allowed == "*" or allowed == origin or ("*" in allowed and fnmatchcase(origin, allowed))
            for allowed in self.allowed_origins
        )

    def allows_header(self, header: str) -> bool:
        """Whether request header ``header`` may be sent (case-insensitive)."""
        name = header.strip().lower()
        return any(fnmatchcase(name, allowed.lower()) for allowed in self.allowed_headers)

    # -- other shapes ---------------------------------------------------------------------------

    def to_s3(self) -> dict[str, Any]:
        """This rule as an entry of S3's ``CORSRules`` (boto3 ``put_bucket_cors``)."""
        rule: dict[str, Any] = {
            "AllowedOrigins": list(self.allowed_origins),
            "AllowedMethods": list(self.allowed_methods),
            "MaxAgeSeconds": self.max_age_seconds,
        }
        if self.allowed_headers:
            rule["AllowedHeaders"] = list(self.allowed_headers)
        if self.expose_headers:
            rule["ExposeHeaders"] = list(self.expose_headers)
        return rule

    @classmethod
    def from_s3(cls, rule: Mapping[str, Any]) -> CorsRules:
        """A rule from an entry of S3's ``CORSRules``."""
        return cls(
            allowed_origins=tuple(rule.get("AllowedOrigins", ())),
            allowed_methods=tuple(rule.get("AllowedMethods", ())),
            allowed_headers=tuple(rule.get("AllowedHeaders", ())),
            expose_headers=tuple(rule.get("ExposeHeaders", ())),
            max_age_seconds=int(rule.get("MaxAgeSeconds", 0)),
        )

    def to_gcs(self) -> dict[str, Any]:
        """This rule as an entry of a GCS bucket's ``cors`` list (``gcloud`` cors file).

        GCS has no allowed-request-headers setting; its ``responseHeader`` is the exposed
        headers list.
        """
        return {
            "origin": list(self.allowed_origins),
            "method": list(self.allowed_methods),
            "responseHeader": list(self.expose_headers),
            "maxAgeSeconds": self.max_age_seconds,
        }

    def to_azure(self) -> dict[str, Any]:
        """Keyword arguments of ``azure.storage.blob.CorsRule``."""
        return {
            "allowed_origins": list(self.allowed_origins),
            "allowed_methods": list(self.allowed_methods),
            "allowed_headers": list(self.allowed_headers),
            "exposed_headers": list(self.expose_headers),
            "max_age_in_seconds": self.max_age_seconds,
        }

    @classmethod
    def from_azure(cls, rule: Any) -> CorsRules:
        """A rule from an ``azure.storage.blob.CorsRule`` (comma-separated fields)."""

        def split(value: Any) -> tuple[str, ...]:
            if isinstance(value, str):
                return tuple(part for part in value.split(",") if part)
            return tuple(value or ())

        return cls(
            allowed_origins=split(rule.allowed_origins),
            allowed_methods=split(rule.allowed_methods),
            allowed_headers=split(rule.allowed_headers),
            expose_headers=split(rule.exposed_headers),
            max_age_seconds=int(rule.max_age_in_seconds or 0),
        )


def _rules(rules: CorsRules | Sequence[CorsRules]) -> tuple[CorsRules, ...]:
    return (rules,) if isinstance(rules, CorsRules) else tuple(rules)


def _header_names(request_headers: str | Iterable[str] | None) -> list[str]:
    if request_headers is None:
        return []
    items = request_headers.split(",") if isinstance(request_headers, str) else request_headers
    return [item.strip() for item in items if item and item.strip()]


def preflight_headers(
    rules: CorsRules | Sequence[CorsRules],
    origin: str | None,
    method: str | None,
    request_headers: str | Iterable[str] | None = None,
) -> dict[str, str] | None:
    """The response headers for a CORS preflight (``OPTIONS``), or None to refuse it.

    Args:
        rules: One rule or several; the first that allows the request answers it (as S3
            does).
        origin: The request's ``Origin`` header.
        method: Its ``Access-Control-Request-Method`` header.
        request_headers: Its ``Access-Control-Request-Headers`` header (comma-separated) or
            the header names as a list.

    Returns:
        Headers for a ``204``/``200`` answer (``Access-Control-Allow-Origin``, ``-Methods``,
        ``-Headers``, ``-Max-Age``, ``-Expose-Headers`` and ``Vary``), or None when no rule
        allows the origin, method and every requested header; the handler should then
        answer ``403`` without CORS headers.
    """
    if not origin or not method:
        return None
    wanted = _header_names(request_headers)
    for rule in _rules(rules):
        if not rule.allows_origin(origin) or method.upper() not in rule.allowed_methods:
            continue
        if not all(rule.allows_header(name) for name in wanted):
            continue
        headers = {
            "Access-Control-Allow-Origin": "*" if "*" in rule.allowed_origins else origin,
            "Access-Control-Allow-Methods": ", ".join(rule.allowed_methods),
            "Access-Control-Max-Age": str(rule.max_age_seconds),
            "Vary": "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
        }
        if wanted:
            headers["Access-Control-Allow-Headers"] = ", ".join(wanted)
        if rule.expose_headers:
            headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
        return headers
    return None


def response_headers(
    rules: CorsRules | Sequence[CorsRules], origin: str | None, method: str
) -> dict[str, str]:
    """CORS headers to add to the actual (non-preflight) response; empty when not allowed.

    A cross-origin ``GET`` or ``PUT`` on a signed URL needs ``Access-Control-Allow-Origin``
    (and ``Access-Control-Expose-Headers`` for scripts to read ``ETag``) on its response.
    """
    if not origin:
        return {}
    for rule in _rules(rules):
        if rule.allows_origin(origin) and method.upper() in rule.allowed_methods:
            headers = {
                "Access-Control-Allow-Origin": "*" if "*" in rule.allowed_origins else origin,
                "Vary": "Origin",
            }
            if rule.expose_headers:
                headers["Access-Control-Expose-Headers"] = ", ".join(rule.expose_headers)
            return headers
    return {}
