"""The exceptions storeroom raises.

Every error derives from :class:`StoreroomError`. Some also derive from the builtin that
code written against plain Python would already catch: a missing object is a
:class:`FileNotFoundError`, an unknown backend key a :class:`KeyError`, a bad option a
:class:`ValueError`. Messages name the bad value, what was expected and how to fix it; they
never contain secrets.
"""

from __future__ import annotations

__all__ = [
    "BackendError",
    "BackendNotRegistered",
    "BackendAlreadyRegistered",
    "ConfigurationError",
    "ContentUnreadable",
    "CredentialsNotFound",
    "IntegrityError",
    "ObjectExists",
    "ObjectNotFound",
    "RangeNotSatisfiable",
    "SignatureExpired",
    "SignatureInvalid",
    "SigningNotSupported",
    "StoreroomError",
    "UnsafePath",
    "UnsupportedContent",
    "ValidationError",
]


class StoreroomError(Exception):
    """Root of every error raised by storeroom."""


class ConfigurationError(StoreroomError, ValueError):
    """A backend or setting was configured with a value that cannot work."""


class BackendNotRegistered(StoreroomError, KeyError):
    """A backend key was looked up that the registry does not hold."""

    def __str__(self) -> str:
        # KeyError quotes its argument; a sentence reads better unquoted.
        return str(self.args[0]) if self.args else ""


class BackendAlreadyRegistered(ConfigurationError):
    """A backend key was registered twice without ``overwrite=True``."""


class ObjectNotFound(StoreroomError, FileNotFoundError):
    """The object does not exist in the backend."""


class ObjectExists(StoreroomError, FileExistsError):
    """A create-only write (``overwrite=False``) found an object already at its path."""


class UnsafePath(StoreroomError, ValueError):
    """A path was rejected because it could escape the backend's root or is malformed."""


class RangeNotSatisfiable(StoreroomError, ValueError):
    """A byte range starts at or beyond the end of the object."""


class UnsupportedContent(StoreroomError, TypeError):
    """Content of a type storeroom cannot read, or an async source given to sync code."""


class ContentUnreadable(StoreroomError, OSError):
    """The content to save (a local path or file) could not be read."""


class IntegrityError(StoreroomError):
    """Bytes read or copied do not match the checksum or size recorded when they were saved."""


class SigningNotSupported(StoreroomError):
    """The backend cannot produce signed URLs (and no URL signer is configured for it)."""


class SignatureInvalid(StoreroomError):
    """A signed URL was tampered with, or signed for another method or path."""


class SignatureExpired(SignatureInvalid):
    """A signed URL was valid but its expiry time has passed."""


class BackendError(StoreroomError):
    """The object store failed in a way storeroom has no more specific error for.

    The original exception is chained as ``__cause__``.
    """


class CredentialsNotFound(BackendError):
    """No credential source had credentials for a cloud backend.

    Raised at the backend's first request. The message lists every source tried, in order
    (option and environment variable names, file paths, profile names; never their values);
    ``sources`` holds the same lines.
    """

    def __init__(self, message: str, *, sources: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.sources = sources


class ValidationError(StoreroomError, ValueError):
    """An upload was refused by a validator (:mod:`storeroom.media.validation`).

    Raised while the bytes stream, before the rest of the file is read and before the last
    chunk reaches the store. ``filename`` is the file's name (None if it had none), ``rule``
    the validator that refused it (``"MaxSize"``, ``"ContentTypes"``, ...), ``value`` what
    the file had and ``limit`` what the rule allows; the message says all four.
    """

    def __init__(
        self, message: str, *, filename: str | None, rule: str, value: object, limit: object
    ) -> None:
        super().__init__(message)
        self.filename = filename
        self.rule = rule
        self.value = value
        self.limit = limit
