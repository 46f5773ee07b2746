"""Bucket CORS administration for obstore S3 and Azure backends.

:func:`apply_bucket_cors` and :func:`get_bucket_cors` write and read the rules of the bucket
behind an S3 backend (with boto3) or of the storage account behind an Azure backend (with
azure-storage-blob), using the backend's own credentials and endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from storeroom.backends.obstore.clients import azure_service, s3_client
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
        client, bucket = s3_client(store)
        client.put_bucket_cors(
            Bucket=bucket, CORSConfiguration={"CORSRules": [r.to_s3() for r in chosen]}
        )
    else:
        from azure.storage.blob import CorsRule

        service = azure_service(store)
        service.set_service_properties(cors=[CorsRule(**r.to_azure()) for r in chosen])


def get_bucket_cors(backend: StorageBackend) -> list[CorsRules]:
    """The CORS rules of the bucket (S3) or storage account (Azure) behind ``backend``.

    An empty list means no CORS configuration. Raises like :func:`apply_bucket_cors`.
    """
    kind, store = _obstore_target(backend)
    if kind == "s3":
        client, bucket = s3_client(store)
        try:
            answer = client.get_bucket_cors(Bucket=bucket)
        except client.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "NoSuchCORSConfiguration":
                return []
            raise
        return [CorsRules.from_s3(rule) for rule in answer.get("CORSRules", [])]
    service = azure_service(store)
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
