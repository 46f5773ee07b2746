"""Keeping secrets out of reprs, error messages and logs.

A value is secret when its option name says so (:func:`is_secret_option`: keys, key ids,
tokens, passwords, connection strings...) or when it is the HMAC ``signing_secret``. Secrets
are shown as ``'***'``. :func:`mask_url` is the one function that hides what a URL carries
(the userinfo password, the query string, where an Azure SAS token or a signature travels);
it is applied to every URL-valued option whatever its name (``aws_endpoint=http://user:PASS@host``),
and by :func:`mask_text` to every URL inside an error message, an event or a log line.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "MASK",
    "is_secret_field",
    "is_secret_option",
    "mask_text",
    "mask_url",
    "masked",
    "masked_mapping",
    "redact",
    "reveal",
    "secret_values",
    "url_secrets",
]

MASK = "***"
"""What a secret value is shown as."""

_SECRET_HINTS = (
    "secret",
    "key",
    "token",
    "password",
    "signature",
    "credential",
    "sas",
    "service_account",
    "connection_string",
)


def is_secret_option(name: str) -> bool:
    """Whether an option's value must never be shown: keys, key ids, tokens, passwords."""
    lowered = name.lower()
    return any(hint in lowered for hint in _SECRET_HINTS)


# Below this length a "secret" is too short to redact from a message without mangling it
# (and too short to be a real credential).
_MIN_REDACT_LENGTH = 4


def is_secret_field(name: str) -> bool:
    """Whether the value of the field or option ``name`` must never be shown."""
    lowered = name.lower()
    if lowered.endswith("_file"):
        # A path to a secret file is not itself a secret (and helps when the file is missing).
        return False
    return lowered == "signing_secret" or is_secret_option(lowered)


def reveal(value: Any) -> Any:
    """The plain value behind a pydantic ``SecretStr`` (or anything with
    ``get_secret_value``); other values unchanged."""
    getter = getattr(value, "get_secret_value", None)
    return getter() if callable(getter) else value


def mask_url(url: str) -> str:
    """``url`` with its password and query string replaced by ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, host = netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        netloc = f"{user}:{MASK}@{host}" if ":" in userinfo else f"{MASK}@{host}"
    query = MASK if parts.query else ""
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^\s'\"<>`]+")


def is_url(value: Any) -> bool:
    """Whether ``value`` is a string holding a URL (``scheme://...``)."""
    return isinstance(value, str) and _URL.fullmatch(value.strip()) is not None


def mask_text(text: str) -> str:
    """``text`` with every URL in it passed through :func:`mask_url`.

    For messages that quote a library's error (obstore and fsspec put the request URL, and
    with it any password in the endpoint, into theirs).
    """
    if "://" not in text:
        return text
    return _URL.sub(lambda found: mask_url(found.group(0)), text)


def masked(name: str, value: Any) -> Any:
    """``value`` as it may be shown for the field or option ``name``."""
    if value is None:
        return None
    if is_secret_field(name):
        return MASK
    if isinstance(value, Mapping):
        return masked_mapping(value)
    if isinstance(value, str) and (
        name in ("url", "endpoint", "signing_base_url") or is_url(value)
    ):
        return mask_url(value)
    return MASK if hasattr(value, "get_secret_value") else value


def masked_mapping(values: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``values`` with every secret value replaced by ``***``."""
    return {str(name): masked(str(name), value) for name, value in values.items()}


def secret_values(values: Mapping[str, Any]) -> list[str]:
    """The secret strings in ``values`` (nested mappings included), for :func:`redact`."""
    found: list[str] = []
    for name, value in values.items():
        value = reveal(value)
        if isinstance(value, Mapping):
            found += secret_values(value)
        elif is_secret_field(str(name)) and value is not None:
            found.append(str(value))
        elif hasattr(value, "get_secret_value"):
            found.append(str(reveal(value)))
    return found


def url_secrets(url: str | None) -> list[str]:
    """The password and query string of ``url``, for :func:`redact`."""
    if not url:
        return []
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]
    return [s for s in (parts.password, parts.query) if s]


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with every occurrence of each secret replaced by ``***``."""
    for secret in sorted(
        {s for s in secrets if len(s) >= _MIN_REDACT_LENGTH}, key=len, reverse=True
    ):
        text = text.replace(secret, MASK)
    return text
