"""The configuration error and the one shape of its message.

``backend 'docs' (from config.toml, storage.backends[0]): field 'type': <problem>. <fix>``;
values are shown masked when secret (:mod:`storeroom.masking`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from storeroom.errors import ConfigurationError
from storeroom.masking import MASK, mask_url, masked, masked_mapping

__all__ = ["InvalidBackendSpec", "shown", "shown_value", "spec_error"]


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


def shown_value(name: str, value: Any) -> Any:
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


def shown(name: str, value: Any) -> str:
    """``repr()`` of :func:`shown_value`: for error messages."""
    return repr(shown_value(name, value))


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
