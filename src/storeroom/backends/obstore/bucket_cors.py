"""Bucket CORS administration for obstore S3 and Azure backends.

:func:`apply_bucket_cors` and :func:`get_bucket_cors` write and read the rules of the bucket
behind an S3 backend (with boto3) or of the storage account behind an Azure backend (with
azure-storage-blob), using the backend's own credentials and endpoint.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storeroom.cors import CorsRules
from storeroom.errors import ConfigurationError

if TYPE_CHECKING:
    from storeroom.backends.base import StorageBackend

__all__ = ["apply_bucket_cors", "get_bucket_cors"]


def _rules(rules: CorsRules | Sequence[CorsRules]) -> tuple[CorsRules, ...]:
    return (rules,) if isinstance(rules, CorsRules) else tuple(rules)


def apply_bucket_cors(backend: StorageBackend, rules: CorsRules | Sequence[CorsRules]) -> None:
    """Replace the CORS configuration of the bucket behind ``backend`` with ``rules``.

    S3 (and S3-compatible servers) use boto3; Azure uses azure-storage-blob and sets the
    *storage account's* blob-service CORS rules (Azure has no per-container CORS).
    Credentials and endpoint are the backend's own.

    Raises:
        ConfigurationError: the backend is not an S3 or Azure ObstoreBackend, the SDK is not
            installed, or no rule is given. GCS is not supported yet: the message says how
            to apply :meth:`CorsRules.to_gcs` with ``gcloud``.
    """
    chosen = _rules(rules)
    if not chosen:
        raise ConfigurationError("apply_bucket_cors needs at least one CorsRules")
    kind, store = _obstore_target(backend)
    if kind == "s3":
        client, bucket = _s3_client(store)
        client.put_bucket_cors(
            Bucket=bucket, CORSConfiguration={"CORSRules": [r.to_s3() for r in chosen]}
        )
    else:
        from azure.storage.blob import CorsRule

        service = _azure_service(store)
        service.set_service_properties(cors=[CorsRule(**r.to_azure()) for r in chosen])


def get_bucket_cors(backend: StorageBackend) -> list[CorsRules]:
    """The CORS rules of the bucket (S3) or storage account (Azure) behind ``backend``.

    An empty list means no CORS configuration. Raises like :func:`apply_bucket_cors`.
    """
    kind, store = _obstore_target(backend)
    if kind == "s3":
        client, bucket = _s3_client(store)
        try:
            answer = client.get_bucket_cors(Bucket=bucket)
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise
        return [CorsRules.from_s3(rule) for rule in answer.get("CORSRules", [])]
    service = _azure_service(store)
    return [CorsRules.from_azure(rule) for rule in service.get_service_properties()["cors"]]


def _obstore_target(backend: StorageBackend) -> tuple[str, Any]:
    from storeroom.backends.obstore.backend import ObstoreBackend

    if not isinstance(backend, ObstoreBackend):
        raise ConfigurationError(
            f"backend {backend.key!r} is a {type(backend).__name__}; bucket CORS can be "
            "managed for ObstoreBackend S3 and Azure backends only"
        )
    kind = backend.kind
    if kind == "gcs":
        raise ConfigurationError(
            f"backend {backend.key!r}: storeroom cannot set GCS bucket CORS yet. Write "
            "{'cors': [rule.to_gcs()]} to cors.json and run `gcloud storage buckets update "
            "gs://BUCKET --cors-file=cors.json`"
        )
    if kind not in ("s3", "azure"):
        raise ConfigurationError(
            f"backend {backend.key!r} ({backend.location}) is a {kind} store, which has no "
            "bucket CORS; storeroom's signed-URL handler answers CORS for it from CorsRules"
        )
    return kind, backend.store


def _s3_client(store: Any) -> tuple[Any, str]:
    try:
        import boto3
        from botocore.config import Config
    except ImportError as exc:
        raise ConfigurationError("managing S3 bucket CORS needs boto3: pip install boto3") from exc
    from storeroom.backends.obstore.credentials import BotocoreCredentialProvider

    config = dict(store.config)
    client_options = dict(store.client_options or {})
    provider = store.credential_provider
    session_kwargs: dict[str, Any] = {}
    if isinstance(provider, BotocoreCredentialProvider):
        session_kwargs["profile_name"] = provider.profile
    elif config.get("access_key_id") and config.get("secret_access_key"):
        session_kwargs.update(
            aws_access_key_id=config["access_key_id"],
            aws_secret_access_key=config["secret_access_key"],
            aws_session_token=config.get("session_token") or config.get("token"),
        )
    elif provider is not None:
        credential = provider()
        if inspect.isawaitable(credential):
            credential = asyncio.run(_awaited(credential))
        session_kwargs.update(
            aws_access_key_id=credential["access_key_id"],
            aws_secret_access_key=credential["secret_access_key"],
            aws_session_token=credential.get("token"),
        )
    session = boto3.session.Session(**session_kwargs)
    region = (
        config.get("region") or os.environ.get("AWS_REGION") or session.region_name or "us-east-1"
    )
    endpoint = config.get("endpoint") or config.get("endpoint_url")
    virtual = str(config.get("virtual_hosted_style_request", "")).lower() == "true"
    style = "virtual" if virtual or not (endpoint or os.environ.get("AWS_ENDPOINT_URL")) else "path"
    verify = str(client_options.get("allow_invalid_certificates", "")).lower() != "true"
    client = session.client(
        "s3",
        region_name=region,
        endpoint_url=endpoint,
        verify=verify,
        config=Config(s3={"addressing_style": style}),
    )
    return client, str(config["bucket"])


async def _awaited(value: Any) -> Any:
    return await value


def _azure_service(store: Any) -> Any:
    try:
        from azure.storage.blob import BlobServiceClient
    except ImportError as exc:
        raise ConfigurationError(
            "managing Azure CORS needs azure-storage-blob: pip install azure-storage-blob"
        ) from exc
    config = dict(store.config)
    account = config.get("account_name") or os.environ.get("AZURE_STORAGE_ACCOUNT_NAME")
    endpoint = config.get("endpoint")
    if not endpoint and not account:
        raise ConfigurationError(
            "the Azure backend has no account name: set azure_storage_account_name or a "
            "connection string"
        )
    url = endpoint or f"https://{account}.blob.core.windows.net"
    credential: Any
    key = config.get("account_key") or config.get("access_key")
    if key:
        credential = {"account_name": account, "account_key": key}
    elif config.get("sas_key"):
        credential = str(config["sas_key"])
    else:
        try:
            from azure.identity import DefaultAzureCredential
        except ImportError as exc:
            raise ConfigurationError(
                "the Azure backend has no account key or SAS; install azure-identity to use "
                "DefaultAzureCredential for CORS management"
            ) from exc
        credential = DefaultAzureCredential()
    return BlobServiceClient(account_url=url, credential=credential)
