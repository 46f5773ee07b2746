"""The gcs extra: a service-account key signs direct uploads, and google-auth's application
default credentials give obstore a token.

Offline: the key is generated here, and the credentials' token endpoint is a small server on
127.0.0.1 started by this program, which checks the JWT that google-auth signed with the key
before answering with a token (Google's OAuth server does the same).
"""

import base64
import json
import os
import threading
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
pem = key.private_bytes(
    serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
).decode()


def _unpad(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


class TokenEndpoint(BaseHTTPRequestHandler):
    """Answers a JWT-bearer grant whose assertion the service account's key signed."""

    def do_POST(self) -> None:
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        header, claims, signature = form["assertion"][0].split(".")
        key.public_key().verify(
            _unpad(signature), f"{header}.{claims}".encode(), padding.PKCS1v15(), hashes.SHA256()
        )
        assert (
            json.loads(_unpad(claims))["iss"] == "install@install-project.iam.gserviceaccount.com"
        )
        body = json.dumps({"access_token": "install-token", "expires_in": 3600}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


server = HTTPServer(("127.0.0.1", 0), TokenEndpoint)
threading.Thread(target=server.serve_forever, daemon=True).start()
account = {
    "type": "service_account",
    "project_id": "install-project",
    "private_key_id": "install-key",
    "private_key": pem,
    "client_email": "install@install-project.iam.gserviceaccount.com",
    "client_id": "1",
    "token_uri": f"http://127.0.0.1:{server.server_address[1]}/token",
}
for name in [n for n in os.environ if n.startswith(("GOOGLE_", "GCE_"))]:
    del os.environ[name]
os.environ["NO_GCE_CHECK"] = "true"  # no metadata server here
os.environ["CLOUDSDK_CONFIG"] = str(Path("gcloud").resolve())
Path("gcloud").mkdir()
Path("gcloud", "application_default_credentials.json").write_text(json.dumps(account))

from storeroom.backends.obstore import ObstoreBackend  # noqa: E402
from storeroom.uploads.targets import instructions  # noqa: E402

# A direct upload signed with the key (GOOG4-RSA-SHA256), size and create-only enforced.
keyed = ObstoreBackend(
    "g", "gs://install-bucket/up", google_service_account_key=json.dumps(account)
)
sent = instructions(
    keyed, "a.txt", content_type="text/plain", size=5, expires_in=60, now=datetime.now(timezone.utc)
)
assert sent.enforced == ("size", "type", "create-only"), sent.enforced
query = parse_qs(urlsplit(sent.url).query)
assert urlsplit(sent.url).path == "/install-bucket/up/a.txt", sent.url
assert (
    query["X-Goog-Algorithm"] == ["GOOG4-RSA-SHA256"] and len(query["X-Goog-Signature"][0]) == 512
)
assert sent.headers["x-goog-if-generation-match"] == "0"

# No key in the options: google-auth's application default credentials (the gcloud file).
ambient = ObstoreBackend("adc", "gs://install-bucket")
assert ambient.credential_plan.source.startswith("google-auth"), ambient.credential_plan
token = ambient.credential_plan.provider()
assert token["token"] == "install-token" and token["expires_at"] > datetime.now(timezone.utc)
server.shutdown()
print("gcs ok")
