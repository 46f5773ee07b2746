"""Where an :class:`~storeroom.backends.obstore.ObstoreBackend` gets its credentials from.

Sources are tried in a fixed, documented order, and the first that has credentials wins:

1. **Explicit options**: ``aws_access_key_id``/``aws_secret_access_key`` (and the Azure and
   GCS equivalents), ``credential_provider``, ``*_skip_signature``, or ``aws_profile=`` naming
   a profile of the shared AWS files.
2. **Environment variables** that obstore reads itself (``AWS_ACCESS_KEY_ID``...,
   ``AZURE_STORAGE_ACCOUNT_KEY``..., ``GOOGLE_APPLICATION_CREDENTIALS``...). For S3,
   ``AWS_PROFILE`` names a profile when no keys are set.
3. **The cloud SDK's own chain**, when the SDK is installed: botocore for S3 (shared
   credentials and config files, SSO, ``credential_process``, assume-role, container and
   instance roles), azure-identity's ``DefaultAzureCredential`` for Azure (environment,
   workload and managed identity, Azure CLI), google-auth's application default credentials
   for GCS (service-account file, ``gcloud`` login, metadata server).
4. Without the SDK, obstore's own fallback: the instance metadata service.

Deciding which source applies does no network I/O; the SDK chains run lazily at the first
request, and temporary credentials are handed to obstore with their expiry so that obstore
asks again before they expire. When nothing is found, the backend's first request raises
:class:`~storeroom.errors.CredentialsNotFound`, listing every source tried (names and paths,
never values).
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from storeroom.errors import ConfigurationError, CredentialsNotFound

__all__ = [
    "ENVIRONMENT_VARIABLES",
    "AzureIdentityCredentialProvider",
    "BotocoreCredentialProvider",
    "CredentialPlan",
    "GoogleAuthCredentialProvider",
    "plan_credentials",
    "wrap_provider",
]

#: Environment variables consulted per store kind (names only; values are never shown).
ENVIRONMENT_VARIABLES: Mapping[str, tuple[str, ...]] = {
    "s3": (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_PROFILE",
        "AWS_WEB_IDENTITY_TOKEN_FILE",
        "AWS_ROLE_ARN",
        "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
        "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        "AWS_SKIP_SIGNATURE",
    ),
    "azure": (
        "AZURE_STORAGE_ACCOUNT_KEY",
        "AZURE_STORAGE_ACCESS_KEY",
        "AZURE_STORAGE_SAS_KEY",
        "AZURE_STORAGE_TOKEN",
        "AZURE_CLIENT_ID",
        "AZURE_CLIENT_SECRET",
        "AZURE_TENANT_ID",
        "AZURE_FEDERATED_TOKEN_FILE",
        "AZURE_STORAGE_USE_EMULATOR",
        "AZURE_SKIP_SIGNATURE",
    ),
    "gcs": (
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_BEARER_TOKEN",
        "GOOGLE_SKIP_SIGNATURE",
    ),
}

# Option names (prefix stripped, lower case) that carry credentials by themselves.
_EXPLICIT: Mapping[str, tuple[tuple[str, ...], ...]] = {
    "s3": (
        ("access_key_id", "secret_access_key"),
        ("skip_signature",),
        ("web_identity_token_file", "role_arn"),
        ("container_credentials_relative_uri",),
        ("container_credentials_full_uri",),
    ),
    "azure": (
        ("account_key",),
        ("access_key",),
        ("master_key",),
        ("sas_key",),
        ("sas_token",),
        ("token",),
        ("bearer_token",),
        ("client_secret",),
        ("use_emulator",),
        ("federated_token_file",),
        ("use_azure_cli",),
        ("skip_signature",),
    ),
    "gcs": (
        ("service_account",),
        ("service_account_path",),
        ("service_account_key",),
        ("application_credentials",),
        ("bearer_token",),
        ("skip_signature",),
    ),
}

_PREFIXES = ("aws_", "google_", "azure_storage_", "azure_")
_GCS_SCOPE = "https://www.googleapis.com/auth/devstorage.full_control"
_AZURE_SCOPE = "https://storage.azure.com/.default"


def _bare(name: str) -> str:
    lowered = name.lower()
    for prefix in _PREFIXES:
        if lowered.startswith(prefix):
            return lowered[len(prefix) :]
    return lowered


def _truthy(value: Any) -> bool:
    if isinstance(value, str):
        return value.strip().lower() not in ("", "0", "false", "no", "off")
    return bool(value)


def _has_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _aws_file(variable: str, default: str, environ: Mapping[str, str]) -> Path:
    return Path(os.path.expanduser(environ.get(variable) or default))


def _file_state(path: Path) -> str:
    return f"{path} ({'exists' if path.is_file() else 'missing'})"


@dataclass(slots=True)
class CredentialPlan:
    """Which credential source a backend uses, and what was checked to decide.

    Attributes:
        kind: The store kind ('s3', 'gcs', 'azure', ...).
        source: The source that supplies the credentials, e.g. ``"explicit options"``,
            ``"environment"``, ``"AWS profile 'dev' (botocore)"``.
        checked: One line per source consulted, in order: names and paths only.
        provider: A credential provider for obstore (``credential_provider``), or None when
            obstore finds the credentials itself.
        resolved: Whether a source with credentials was positively found (False when the
            decision was left to a lazy chain or to obstore's instance-metadata fallback).
    """

    kind: str
    source: str
    checked: list[str] = field(default_factory=list)
    provider: Any = None
    resolved: bool = True

    def not_found(self, backend_key: str, location: str, reason: str) -> CredentialsNotFound:
        """The error for a backend whose credentials could not be found."""
        lines = "\n".join(f"  - {line}" for line in self.checked)
        return CredentialsNotFound(
            f"backend {backend_key!r} ({location}) found no credentials: {reason}.\n"
            f"Sources tried, in order:\n{lines}\n"
            "Pass credentials as options, set the environment variables, or configure a "
            "profile / managed identity (see docs/security.md).",
            sources=tuple(self.checked),
        )


def plan_credentials(
    kind: str,
    config: Mapping[str, Any],
    *,
    credential_provider: Any = None,
    aws_profile: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> CredentialPlan:
    """Decide where a store's credentials come from, without network I/O.

    Args:
        kind: 's3', 'gcs' or 'azure' (other kinds need no credentials).
        config: The store options under obstore's names (``aws_access_key_id``...).
        credential_provider: A provider the user passed; it wins over everything else.
        aws_profile: A profile of the shared AWS files to use (S3 only).
        environ: The environment to inspect (default: ``os.environ``).

    Raises:
        ConfigurationError: the ``aws_profile`` option was given for a non-S3 store, or
            without botocore installed.
    """
    env = os.environ if environ is None else environ
    if aws_profile is not None and kind != "s3":
        raise ConfigurationError(
            f"option 'aws_profile' applies to s3:// stores only, not to a {kind} store"
        )
    if kind not in _EXPLICIT:
        return CredentialPlan(kind, "none needed")
    given = {_bare(k) for k, v in config.items() if v is not None and v != ""}
    if credential_provider is not None:
        return CredentialPlan(
            kind,
            "explicit options (credential_provider)",
            ["explicit options: credential_provider"],
            wrap_provider(credential_provider),
        )
    for group in _EXPLICIT[kind]:
        if all(name in given for name in group) and (
            group != ("skip_signature",) or _truthy(_value(config, "skip_signature"))
        ):
            return CredentialPlan(
                kind, "explicit options", [f"explicit options: {', '.join(group)}"]
            )
    if kind == "s3" and aws_profile is not None:
        return _profile_plan(aws_profile, "option aws_profile", env)
    checked = ["explicit options: none given"]
    names = ENVIRONMENT_VARIABLES[kind]
    found = _environment_source(kind, env)
    if found is not None:
        return CredentialPlan(kind, f"environment ({found})", [*checked, f"environment: {found}"])
    checked.append(f"environment: none of {', '.join(names)} set")
    if kind == "s3":
        profile = env.get("AWS_PROFILE") or env.get("AWS_DEFAULT_PROFILE")
        if profile:
            return _profile_plan(profile, "AWS_PROFILE", env, checked)
        return _aws_chain_plan(env, checked)
    if kind == "azure":
        return _sdk_plan(
            kind,
            checked,
            "azure.identity",
            "azure-identity DefaultAzureCredential "
            "(environment, workload identity, managed identity, Azure CLI)",
            AzureIdentityCredentialProvider,
            "managed identity (instance metadata endpoint)",
        )
    return _sdk_plan(
        kind,
        checked,
        "google.auth",
        f"google-auth application default credentials ({_gcloud_adc_path(env)}, metadata server)",
        GoogleAuthCredentialProvider,
        "GCE metadata server",
    )


def _value(config: Mapping[str, Any], bare_name: str) -> Any:
    for key, value in config.items():
        if _bare(key) == bare_name:
            return value
    return None


def _environment_source(kind: str, env: Mapping[str, str]) -> str | None:
    def has(*names: str) -> bool:
        return all(env.get(n) for n in names)

    if kind == "s3":
        if has("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            return "AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY"
        if has("AWS_WEB_IDENTITY_TOKEN_FILE", "AWS_ROLE_ARN"):
            return "AWS_WEB_IDENTITY_TOKEN_FILE, AWS_ROLE_ARN"
        for name in (
            "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
            "AWS_CONTAINER_CREDENTIALS_FULL_URI",
        ):
            if has(name):
                return name
        if _truthy(env.get("AWS_SKIP_SIGNATURE", "")):
            return "AWS_SKIP_SIGNATURE"
        return None
    if kind == "azure":
        for name in (
            "AZURE_STORAGE_ACCOUNT_KEY",
            "AZURE_STORAGE_ACCESS_KEY",
            "AZURE_STORAGE_SAS_KEY",
            "AZURE_STORAGE_TOKEN",
        ):
            if has(name):
                return name
        if has("AZURE_CLIENT_ID", "AZURE_CLIENT_SECRET", "AZURE_TENANT_ID"):
            return "AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID"
        if has("AZURE_CLIENT_ID", "AZURE_FEDERATED_TOKEN_FILE", "AZURE_TENANT_ID"):
            return "AZURE_CLIENT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_TENANT_ID"
        for name in ("AZURE_STORAGE_USE_EMULATOR", "AZURE_SKIP_SIGNATURE"):
            if _truthy(env.get(name, "")):
                return name
        return None
    for name in (
        "GOOGLE_SERVICE_ACCOUNT",
        "GOOGLE_SERVICE_ACCOUNT_PATH",
        "GOOGLE_SERVICE_ACCOUNT_KEY",
        "GOOGLE_APPLICATION_CREDENTIALS",
        "GOOGLE_BEARER_TOKEN",
    ):
        if has(name):
            return name
    if _truthy(env.get("GOOGLE_SKIP_SIGNATURE", "")):
        return "GOOGLE_SKIP_SIGNATURE"
    return None


def _gcloud_adc_path(env: Mapping[str, str]) -> Path:
    base = env.get("CLOUDSDK_CONFIG") or os.path.join(os.path.expanduser("~"), ".config", "gcloud")
    return Path(base) / "application_default_credentials.json"


def _aws_files(env: Mapping[str, str]) -> list[str]:
    credentials = _aws_file("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials", env)
    config = _aws_file("AWS_CONFIG_FILE", "~/.aws/config", env)
    return [
        f"shared credentials file: {_file_state(credentials)}",
        f"config file: {_file_state(config)}",
    ]


def _profile_plan(
    profile: str, origin: str, env: Mapping[str, str], checked: list[str] | None = None
) -> CredentialPlan:
    lines = list(checked or ["explicit options: aws_profile"])
    lines.append(f"profile {profile!r} (from {origin})")
    lines += _aws_files(env)
    if not _has_module("botocore") and checked is not None:
        # An ambient AWS_PROFILE must not stop start-up; the first request reports it.
        lines.append("profile files not read: botocore is not installed (pip install boto3)")
        lines.append("instance metadata (EC2 IMDS, by obstore)")
        return CredentialPlan("s3", "instance metadata (obstore)", lines, resolved=False)
    if not _has_module("botocore"):
        raise ConfigurationError(
            f"AWS profile {profile!r} (from {origin}) needs botocore to read the shared "
            "credentials and config files: pip install boto3"
        )
    provider = BotocoreCredentialProvider(profile)
    return CredentialPlan(
        "s3", f"AWS profile {profile!r} (botocore)", lines, provider, resolved=False
    )


def _aws_chain_plan(env: Mapping[str, str], checked: list[str]) -> CredentialPlan:
    lines = list(checked)
    if _has_module("botocore"):
        profile = "default"
        lines.append(f"profile {profile!r}")
        lines += _aws_files(env)
        lines += [
            "SSO, credential_process and assume-role settings of that profile",
            "container credentials (ECS/EKS)",
            "instance metadata (EC2 IMDS)"
            + (
                " - disabled by AWS_EC2_METADATA_DISABLED"
                if _truthy(env.get("AWS_EC2_METADATA_DISABLED", ""))
                else ""
            ),
        ]
        return CredentialPlan(
            "s3",
            "botocore default chain",
            lines,
            BotocoreCredentialProvider(None),
            resolved=False,
        )
    lines += [
        "shared credentials/config files, profiles and SSO: not read (botocore is not "
        "installed: pip install boto3)",
        "instance metadata (EC2 IMDS, by obstore)",
    ]
    return CredentialPlan("s3", "instance metadata (obstore)", lines, resolved=False)


def _sdk_plan(
    kind: str,
    checked: list[str],
    module: str,
    chain: str,
    provider: Callable[[], Any],
    native: str,
) -> CredentialPlan:
    lines = list(checked)
    if _has_module(module):
        lines.append(chain)
        return CredentialPlan(kind, chain, lines, provider(), resolved=False)
    lines.append(f"{chain.split(' (')[0]}: not installed")
    lines.append(f"{native} (by obstore)")
    return CredentialPlan(kind, f"{native} (obstore)", lines, resolved=False)


def _utc(moment: Any) -> datetime | None:
    """``moment`` in UTC (obstore accepts only ``datetime.timezone.utc``); naive means UTC."""
    if not isinstance(moment, datetime):
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=timezone.utc)
    return moment.astimezone(timezone.utc)


class _LazyProvider:
    """Shared machinery: build the SDK credential object once, on first call, thread-safely.

    ``failure`` keeps the last :class:`CredentialsNotFound` so that the backend can raise it
    (obstore wraps a provider's exception in its own error type).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._state: Any = None
        self.failure: CredentialsNotFound | None = None

    def _fail(self, reason: str) -> CredentialsNotFound:
        self.failure = CredentialsNotFound(reason)
        return self.failure

    def same_source(self, other: object) -> bool:
        """Whether ``other`` gets its credentials from the same place (so acts as the same
        principal); by default only the provider itself does."""
        return other is self


def wrap_provider(provider: Any) -> Any:
    """``provider`` (sync or async) wrapped so that obstore accepts what it returns.

    obstore only takes expiry times in ``datetime.timezone.utc``; botocore and STS answers
    carry dateutil's ``tzutc()``. The wrapper converts them, keeps the provider's ``config``
    (obstore reads a region from it), and records an exception the provider raises so that
    the backend can report it (obstore wraps it in its own error). storeroom's own
    providers are returned unchanged.
    """
    if isinstance(provider, _LazyProvider):
        return provider
    call = getattr(provider, "__call__", provider)  # noqa: B004
    if inspect.iscoroutinefunction(provider) or inspect.iscoroutinefunction(call):
        return _AsyncProviderWrapper(provider)
    return _ProviderWrapper(provider)


class _ProviderWrapper(_LazyProvider):
    def __init__(self, provider: Any) -> None:
        super().__init__()
        self.wrapped = provider
        config = getattr(provider, "config", None)
        if isinstance(config, Mapping):
            self.config = dict(config)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({getattr(self.wrapped, '__name__', 'provider')})"

    def _finish(self, credential: Any) -> dict[str, Any]:
        result = dict(credential)
        if "expires_at" in result:
            result["expires_at"] = _utc(result["expires_at"])
        self.failure = None
        return result

    def _raised(self, exc: Exception) -> CredentialsNotFound:
        return self._fail(f"credential_provider raised {type(exc).__name__}: {exc}")

    def __call__(self) -> dict[str, Any]:
        try:
            return self._finish(self.wrapped())
        except Exception as exc:
            raise self._raised(exc) from exc


class _AsyncProviderWrapper(_ProviderWrapper):
    async def __call__(self) -> dict[str, Any]:  # type: ignore[override]
        try:
            return self._finish(await self.wrapped())
        except Exception as exc:
            raise self._raised(exc) from exc


class BotocoreCredentialProvider(_LazyProvider):
    """An obstore S3 credential provider backed by botocore's credential chain.

    With ``profile`` it reads that profile of the shared credentials and config files
    (including SSO, ``credential_process`` and assume-role); without, botocore's default
    chain (environment, ``default`` profile, container and instance roles). Temporary
    credentials are returned with their expiry, and botocore refreshes them when obstore
    asks again shortly before they expire. The session is created on the first call.

    Raises:
        CredentialsNotFound: (from a call) the profile does not exist or no source in
            botocore's chain has credentials.
    """

    def __init__(self, profile: str | None = None) -> None:
        super().__init__()
        self.profile = profile

    def __repr__(self) -> str:
        return f"BotocoreCredentialProvider(profile={self.profile!r})"

    def same_source(self, other: object) -> bool:
        """The same profile (or both botocore's default chain) of this machine's files."""
        return isinstance(other, BotocoreCredentialProvider) and other.profile == self.profile

    @property
    def region(self) -> str | None:
        """The region configured for the profile, if any (reads the config file)."""
        session = self._session()
        region = session.get_config_variable("region")
        return str(region) if region else None

    def _session(self) -> Any:
        import botocore.session

        return botocore.session.Session(profile=self.profile)

    def _credentials(self) -> Any:
        with self._lock:
            if self._state is None:
                from botocore.exceptions import BotoCoreError

                try:
                    credentials = self._session().get_credentials()
                except BotoCoreError as exc:
                    raise self._fail(f"{type(exc).__name__}: {exc}") from exc
                if credentials is None:
                    where = f"profile {self.profile!r}" if self.profile else "botocore's chain"
                    raise self._fail(f"no source in {where} has credentials")
                self._state = credentials
            return self._state

    def __call__(self) -> dict[str, Any]:
        """Current credentials, refreshed by botocore when they are about to expire."""
        from botocore.exceptions import BotoCoreError

        credentials = self._credentials()
        try:
            frozen = credentials.get_frozen_credentials()
        except BotoCoreError as exc:
            raise self._fail(f"refreshing credentials failed: {type(exc).__name__}") from exc
        # Only refreshable (temporary) credentials have an expiry; botocore keeps it private.
        expiry = getattr(credentials, "_expiry_time", None)
        self.failure = None
        return {
            "access_key_id": frozen.access_key,
            "secret_access_key": frozen.secret_key,
            "token": frozen.token,
            "expires_at": _utc(expiry),
        }


class AzureIdentityCredentialProvider(_LazyProvider):
    """An obstore Azure credential provider backed by azure-identity's DefaultAzureCredential.

    The credential object is created on the first call; tokens carry their expiry, so obstore
    asks for a new one before the old expires.
    """

    def __repr__(self) -> str:
        return "AzureIdentityCredentialProvider()"

    def __call__(self) -> dict[str, Any]:
        """A bearer token for Azure Storage."""
        from azure.core.exceptions import ClientAuthenticationError
        from azure.identity import DefaultAzureCredential

        with self._lock:
            if self._state is None:
                self._state = DefaultAzureCredential()
        try:
            token = self._state.get_token(_AZURE_SCOPE)
        except ClientAuthenticationError as exc:
            # Its message lists each credential type tried, one per tab-indented line.
            tried = [
                line.strip().split(":", 1)[0]
                for line in str(exc).splitlines()
                if line.startswith("\t") and ":" in line
            ]
            detail = f" (tried {', '.join(tried)})" if tried else ""
            raise self._fail(f"DefaultAzureCredential found no credential{detail}") from exc
        self.failure = None
        return {
            "token": token.token,
            "expires_at": datetime.fromtimestamp(token.expires_on, timezone.utc),
        }


class GoogleAuthCredentialProvider(_LazyProvider):
    """An obstore GCS credential provider backed by google-auth's application default
    credentials (service-account file, ``gcloud auth application-default login``, metadata
    server). Found on the first call; tokens are refreshed before they expire."""

    def __repr__(self) -> str:
        return "GoogleAuthCredentialProvider()"

    def __call__(self) -> dict[str, Any]:
        """An OAuth bearer token for Cloud Storage."""
        import google.auth
        from google.auth.exceptions import GoogleAuthError
        from google.auth.transport.requests import Request

        try:
            with self._lock:
                if self._state is None:
                    self._state, _ = google.auth.default(scopes=[_GCS_SCOPE])
                credentials = self._state
                if not credentials.valid:
                    credentials.refresh(Request())
        except GoogleAuthError as exc:
            raise self._fail(f"{type(exc).__name__}: {exc}") from exc
        self.failure = None
        return {"token": credentials.token, "expires_at": _utc(credentials.expiry)}
