"""The azure extra: the azure-storage-blob service client storeroom builds, offline.

The endpoint is a port on 127.0.0.1 nothing listens on; no request is sent.
"""

import base64
import os
import socket

from storeroom.backends.obstore import ObstoreBackend
from storeroom.backends.obstore.clients import azure_service

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
endpoint = f"http://127.0.0.1:{port}/installaccount"
account_key = base64.b64encode(b"install-test-account-key-32byte!").decode()
for name in [n for n in os.environ if n.startswith("AZURE_")]:
    del os.environ[name]

# With the account key: shared-key credentials, for CORS and the block lists of uploads.
backend = ObstoreBackend(
    "az",
    "az://install-container/docs",
    azure_storage_account_name="installaccount",
    azure_storage_account_key=account_key,
    azure_storage_endpoint=endpoint,
    azure_allow_http=True,
)
service = azure_service(backend.store)
assert type(service).__name__ == "BlobServiceClient"
assert service.account_name == "installaccount" and service.url.startswith(endpoint), service.url
assert type(service.credential).__name__ == "SharedKeyCredentialPolicy"
blob = service.get_blob_client("install-container", "docs/a.txt")
assert blob.url == f"{endpoint}/install-container/docs/a.txt", blob.url

# With a SAS token.
sas = ObstoreBackend(
    "sas",
    "az://install-container",
    azure_storage_account_name="installaccount",
    azure_storage_sas_key="sv=2023-11-03&ss=b&sig=abc",
    azure_storage_endpoint=endpoint,
    azure_allow_http=True,
)
assert "sig=abc" in azure_service(sas.store).get_blob_client("install-container", "x").url

# Without key or SAS: azure-identity's DefaultAzureCredential (created, not asked; tokens
# need HTTPS, so the account's public endpoint, to which nothing is sent).
ambient = ObstoreBackend(
    "ambient", "az://install-container", azure_storage_account_name="installaccount"
)
assert ambient.credential_plan.source.startswith("azure-identity"), ambient.credential_plan
service = azure_service(ambient.store)
assert service.url == "https://installaccount.blob.core.windows.net/", service.url
assert type(service.credential).__name__ == "DefaultAzureCredential"
print("azure ok")
