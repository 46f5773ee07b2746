"""SDK clients (boto3, azure-storage-blob) for the store behind an obstore backend.

Bucket administration (:mod:`.bucket_cors`) and multipart clean-up (:mod:`.multipart`) reach
the store through these, with the backend's own credentials and endpoint.
"""

from __future__ import annotations

import asyncio
import inspect
import os
from typing import Any

from storeroom.errors import ConfigurationError

__all__ = ["azure_service", "s3_client"]


def s3_client(store: Any) -> tuple[Any, str]:
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


def azure_service(store: Any) -> Any:
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
