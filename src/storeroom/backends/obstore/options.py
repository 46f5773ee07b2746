"""Turning the options users pass to :class:`ObstoreBackend` into what obstore accepts.

Pure functions, no I/O. They absorb the ways option sets written for other libraries or read
from the environment break obstore: None values (an unset environment variable) mean "not
given"; client options such as ``aws_allow_http`` move into ``client_options`` (passing them
as store config makes obstore panic); an Azure connection string becomes account name, key
and endpoint.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from storeroom.errors import ConfigurationError

__all__ = [
    "STORE_KINDS",
    "ObstoreOptions",
    "parse_azure_connection_string",
    "split_options",
    "store_kind",
]

#: URL scheme -> kind of obstore store.
STORE_KINDS: Mapping[str, str] = {
    "s3": "s3",
    "s3a": "s3",
    "gs": "gcs",
    "gcs": "gcs",
    "az": "azure",
    "azure": "azure",
    "abfs": "azure",
    "abfss": "azure",
    "adl": "azure",
    "file": "local",
    "memory": "memory",
    "http": "http",
    "https": "http",
}

_PREFIX = {"s3": "aws_", "gcs": "google_", "azure": "azure_storage_"}

_CLIENT_OPTIONS = frozenset(
    {
        "allow_http",
        "allow_invalid_certificates",
        "connect_timeout",
        "default_content_type",
        "default_headers",
        "http1_only",
        "http2_only",
        "pool_idle_timeout",
        "pool_max_idle_per_host",
        "proxy_url",
        "proxy_ca_certificate",
        "proxy_excludes",
        "root_certificate",
        "randomize_addresses",
        "read_timeout",
        "timeout",
        "user_agent",
    }
)

# Store configuration keys obstore documents, without their aws_/google_/azure_ prefix. obstore
# accepts more aliases; this list is only used to tell a user what would be valid.
_CONFIG_KEYS: Mapping[str, tuple[str, ...]] = {
    "s3": (
        "access_key_id",
        "secret_access_key",
        "session_token",
        "token",
        "region",
        "default_region",
        "endpoint",
        "endpoint_url",
        "bucket",
        "skip_signature",
        "virtual_hosted_style_request",
        "unsigned_payload",
        "checksum_algorithm",
        "conditional_put",
        "copy_if_not_exists",
        "server_side_encryption",
        "sse_kms_key_id",
        "sse_bucket_key_enabled",
        "request_payer",
        "role_arn",
        "role_session_name",
        "web_identity_token_file",
        "sts_endpoint",
        "metadata_endpoint",
        "disable_tagging",
        "container_credentials_relative_uri",
        "container_credentials_full_uri",
    ),
    "gcs": (
        "service_account",
        "service_account_path",
        "service_account_key",
        "application_credentials",
        "base_url",
        "bucket",
        "bearer_token",
        "skip_signature",
    ),
    "azure": (
        "account_name",
        "account_key",
        "client_id",
        "client_secret",
        "tenant_id",
        "authority_host",
        "sas_key",
        "token",
        "use_emulator",
        "endpoint",
        "container_name",
        "msi_endpoint",
        "object_id",
        "msi_resource_id",
        "federated_token_file",
        "use_azure_cli",
        "skip_signature",
        "use_fabric_endpoint",
        "disable_tagging",
    ),
}

_PASS_THROUGH = ("client_options", "retry_config", "credential_provider", "config")


@dataclass(slots=True)
class ObstoreOptions:
    """Options split the way ``obstore.store.from_url`` takes them."""

    config: dict[str, Any] = field(default_factory=dict)
    client_options: dict[str, Any] = field(default_factory=dict)
    retry_config: dict[str, Any] | None = None
    credential_provider: Any = None
    local: dict[str, Any] = field(default_factory=dict)
    #: ``aws_profile``: a profile of the shared AWS files (resolved by the credentials module,
    #: never passed to obstore).
    aws_profile: str | None = None

    def as_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for ``from_url``."""
        kwargs: dict[str, Any] = dict(self.config)
        if self.client_options:
            kwargs["client_options"] = self.client_options
        if self.retry_config is not None:
            kwargs["retry_config"] = self.retry_config
        if self.credential_provider is not None:
            kwargs["credential_provider"] = self.credential_provider
        kwargs.update(self.local)
        return kwargs


def store_kind(url: str) -> str:
    """The kind of store a URL names ('s3', 'gcs', 'azure', 'local', 'memory', 'http')."""
    scheme = urlsplit(url).scheme.lower()
    kind = STORE_KINDS.get(scheme)
    if kind is None:
        valid = ", ".join(f"{s}://" for s in STORE_KINDS)
        raise ConfigurationError(
            f"unsupported storage URL scheme {scheme + '://' if scheme else repr(url)}; "
            f"ObstoreBackend accepts {valid}"
        )
    return kind


def valid_option_names(kind: str) -> list[str]:
    """Option names (in their prefixed spelling) that a store of ``kind`` accepts."""
    prefix = _PREFIX.get(kind, "")
    names = [prefix + k for k in _CONFIG_KEYS.get(kind, ())]
    names += ["azure_storage_connection_string"] if kind == "azure" else []
    names += [prefix + "allow_http"] if prefix else []
    names += ["aws_profile"] if kind == "s3" else []
    names += sorted(_CLIENT_OPTIONS) + list(_PASS_THROUGH)
    if kind == "local":
        names += ["mkdir", "automatic_cleanup"]
    return names


def unknown_option_error(kind: str, name: str, backend_key: str) -> ConfigurationError:
    """The error for an option obstore rejected, listing what is valid."""
    valid = ", ".join(valid_option_names(kind))
    return ConfigurationError(
        f"backend {backend_key!r}: option {name!r} is not valid for a {kind} store. "
        f"Valid options: {valid}"
    )


def parse_azure_connection_string(value: str) -> dict[str, Any]:
    """Translate an Azure storage connection string into obstore Azure options.

    Understands AccountName, AccountKey, BlobEndpoint, SharedAccessSignature,
    DefaultEndpointsProtocol, EndpointSuffix and UseDevelopmentStorage.
    """
    parts: dict[str, str] = {}
    for item in value.split(";"):
        item = item.strip()
        if not item:
            continue
        name, sep, val = item.partition("=")
        if not sep:
            raise ConfigurationError(
                "azure_storage_connection_string is malformed: expected 'Name=value' pairs "
                "separated by ';', found a part without '='"
            )
        parts[name.strip().lower()] = val.strip()
    options: dict[str, Any] = {}
    if parts.get("usedevelopmentstorage", "").lower() == "true":
        options["use_emulator"] = True
        options["account_name"] = "devstoreaccount1"
    if "accountname" in parts:
        options["account_name"] = parts["accountname"]
    if "accountkey" in parts:
        options["account_key"] = parts["accountkey"]
    if "sharedaccesssignature" in parts:
        options["sas_key"] = parts["sharedaccesssignature"]
    endpoint = parts.get("blobendpoint")
    if endpoint is None and "endpointsuffix" in parts and "account_name" in options:
        protocol = parts.get("defaultendpointsprotocol", "https")
        endpoint = f"{protocol}://{options['account_name']}.blob.{parts['endpointsuffix']}"
    if endpoint:
        options["endpoint"] = endpoint.rstrip("/")
        if endpoint.lower().startswith("http://"):
            options["allow_http"] = True
    if "account_name" not in options:
        raise ConfigurationError(
            "azure_storage_connection_string has no AccountName (and is not "
            "UseDevelopmentStorage=true); copy the full string from the storage account's "
            "'Access keys' page"
        )
    return options


def split_options(kind: str, options: Mapping[str, Any]) -> ObstoreOptions:
    """Sort user options into store config, client options, retry config and local options.

    None values are dropped (so obstore falls back to environment variables and instance
    credentials), and booleans that arrive as strings from the environment are kept as
    strings, which obstore parses.
    """
    out = ObstoreOptions()
    prefix = _PREFIX.get(kind, "")
    for name, value in options.items():
        if value is None:
            continue
        if name == "client_options":
            out.client_options.update({k: v for k, v in dict(value).items() if v is not None})
        elif name == "retry_config":
            out.retry_config = dict(value)
        elif name == "credential_provider":
            out.credential_provider = value
        elif kind == "s3" and name in ("aws_profile", "profile"):
            out.aws_profile = str(value)
        elif name == "config":
            out.config.update({k: v for k, v in dict(value).items() if v is not None})
        elif kind == "azure" and name in (
            "azure_storage_connection_string",
            "connection_string",
        ):
            parsed = parse_azure_connection_string(str(value))
            if parsed.pop("allow_http", False):
                out.client_options.setdefault("allow_http", True)
            for key, val in parsed.items():
                out.config.setdefault(key, val)
        elif kind == "local" and name in ("mkdir", "automatic_cleanup"):
            out.local[name] = value
        elif _client_option_name(name, prefix) is not None:
            out.client_options[_client_option_name(name, prefix)] = value  # type: ignore[index]
        else:
            out.config[name] = value
    if kind == "local" and "mkdir" not in out.local:
        out.local["mkdir"] = True
    if "allow_http" not in out.client_options and _plain_http_endpoint(out.config):
        # An explicit http:// endpoint (MinIO, an emulator) is a request for plain HTTP.
        out.client_options["allow_http"] = True
    return out


def _plain_http_endpoint(config: Mapping[str, Any]) -> bool:
    return any(
        "endpoint" in name and isinstance(value, str) and value.lower().startswith("http://")
        for name, value in config.items()
    )


def _client_option_name(name: str, prefix: str) -> str | None:
    if name in _CLIENT_OPTIONS:
        return name
    for candidate_prefix in (prefix, "aws_", "google_", "azure_storage_", "azure_"):
        if not candidate_prefix:
            continue
        if name.startswith(candidate_prefix) and name[len(candidate_prefix) :] in _CLIENT_OPTIONS:
            return name[len(candidate_prefix) :]
    return None
