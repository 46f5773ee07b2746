"""Serving HMAC-signed URLs: :class:`SignedUrlApp` (ASGI) and :class:`SignedUrlWsgiApp`."""

from __future__ import annotations

from storeroom.web.asgi import SignedUrlApp
from storeroom.web.wsgi import SignedUrlWsgiApp

__all__ = ["SignedUrlApp", "SignedUrlWsgiApp"]
