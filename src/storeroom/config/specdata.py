"""The fields of a :class:`~storeroom.config.spec.BackendSpec`, with no behaviour.

:class:`SpecData` is what :mod:`~storeroom.config.validation` checks and
:mod:`~storeroom.config.construction` builds from; :class:`~storeroom.config.spec.BackendSpec`
adds the behaviour on top (validation when it is created, building its backend). Keeping the
fields here, below both, is what lets the spec call them without an import loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from storeroom.config.errors import shown, shown_value
from storeroom.masking import reveal, secret_values, url_secrets

__all__ = ["SpecData"]

_HIDDEN: tuple[object, ...] = (None, "", {}, False)


@dataclass(slots=True, repr=False)
class SpecData:
    """The fields of one backend's configuration.

    See :class:`~storeroom.config.spec.BackendSpec` for what each field means.
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
    checksum_algorithm: str | None = None
    source: str | None = None

    def __repr__(self) -> str:
        shown_fields = [
            f"{f.name}={shown(f.name, getattr(self, f.name))}"
            for f in fields(self)
            if f.name == "key" or getattr(self, f.name) not in _HIDDEN
        ]
        return f"{type(self).__name__}({', '.join(shown_fields)})"

    __str__ = __repr__

    def masked(self) -> dict[str, Any]:
        """The spec as a dict, secrets replaced by ``'***'`` (safe to log or print)."""
        return {
            f.name: shown_value(f.name, getattr(self, f.name))
            for f in fields(self)
            if getattr(self, f.name) not in _HIDDEN
        }

    @property
    def kind(self) -> str:
        """The canonical type: one of the type aliases' values, or ``'url'``."""
        return self.type or "url"

    def secrets(self) -> list[str]:
        """The secret values this spec holds, in the clear: to redact them from messages."""
        found = secret_values(self.options) + url_secrets(self.url)
        if self.signing_secret is not None:
            found.append(str(reveal(self.signing_secret)))
        return found
