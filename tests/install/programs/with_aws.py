"""The aws extra: the boto3 client storeroom builds for an S3 backend, and AWS profiles.

No request is sent: the endpoint is a port on 127.0.0.1 nothing listens on.
"""

import os
import socket
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

with socket.socket() as probe:
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
endpoint = f"http://127.0.0.1:{port}"

Path("credentials").write_text(
    "[install]\naws_access_key_id = AKIAFROMPROFILE0001\naws_secret_access_key = profile-secret\n"
)
Path("config").write_text("[profile install]\nregion = eu-central-1\n")
for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE", "AWS_ENDPOINT_URL"):
    os.environ.pop(name, None)
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = str(Path("credentials").resolve())
os.environ["AWS_CONFIG_FILE"] = str(Path("config").resolve())

from storeroom.backends.obstore import ObstoreBackend  # noqa: E402
from storeroom.backends.obstore.clients import s3_client  # noqa: E402
from storeroom.backends.obstore.credentials import BotocoreCredentialProvider  # noqa: E402

# Static keys: the client for bucket CORS and multipart clean-up, path-style on the endpoint.
backend = ObstoreBackend(
    "s3",
    "s3://install-bucket/media",
    aws_endpoint=endpoint,
    aws_region="eu-west-1",
    aws_access_key_id="AKIASTATICKEY000001",
    aws_secret_access_key="static-secret",
    aws_allow_http=True,
)
client, bucket = s3_client(backend.store)
assert bucket == "install-bucket"
assert client.meta.endpoint_url == endpoint and client.meta.region_name == "eu-west-1"
url = client.generate_presigned_url(
    "put_object", Params={"Bucket": bucket, "Key": "media/a.txt"}, ExpiresIn=60
)
parts = urlsplit(url)
assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{endpoint}/install-bucket/media/a.txt", (
    url
)
query = parse_qs(parts.query)  # signed locally with the backend's keys
assert query["AWSAccessKeyId"] == ["AKIASTATICKEY000001"] and query["Signature"], url

# A named profile of the shared files, read by botocore (no keys in the options).
provider = BotocoreCredentialProvider("install")
assert provider()["access_key_id"] == "AKIAFROMPROFILE0001" and provider.region == "eu-central-1"
profiled = ObstoreBackend("p", "s3://install-bucket", aws_profile="install", aws_endpoint=endpoint)
assert "install" in profiled.credential_plan.source, profiled.credential_plan
client, _ = s3_client(profiled.store)
assert client._request_signer._credentials.access_key == "AKIAFROMPROFILE0001"
assert client.meta.region_name == "eu-central-1"
print("aws ok")
