"""moto's S3 server, in-process, on 127.0.0.1."""

from __future__ import annotations

import urllib.request
from dataclasses import dataclass, field
from typing import Any


@dataclass
class MotoServer:
    """A running moto server and what clients need to reach it."""

    endpoint: str
    region: str = "us-east-1"
    access_key: str = "testing"
    secret_key: str = "testing"
    _server: Any = field(default=None, repr=False)

    def client(self) -> Any:
        """A boto3 S3 client for this server."""
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def obstore_options(self) -> dict[str, Any]:
        """The options an ``ObstoreBackend`` on ``s3://`` needs to reach this server."""
        return {
            "aws_access_key_id": self.access_key,
            "aws_secret_access_key": self.secret_key,
            "aws_endpoint": self.endpoint,
            "aws_region": self.region,
            "aws_allow_http": True,
        }

    def create_bucket(self, name: str) -> str:
        """Create bucket ``name`` (no error if it exists) and return the name."""
        client = self.client()
        try:
            client.create_bucket(Bucket=name)
        except client.exceptions.BucketAlreadyOwnedByYou:
            pass
        return name

    def fresh_bucket(self, name: str) -> str:
        """Bucket ``name`` as if new: created if missing, emptied, without a bucket policy."""
        self.create_bucket(name)
        client = self.client()
        client.delete_bucket_policy(Bucket=name)
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
            keys = [{"Key": item["Key"]} for item in page.get("Contents", [])]
            if keys:
                client.delete_objects(Bucket=name, Delete={"Objects": keys})
        return name

    def drop_bucket_policies(self) -> None:
        """Remove every bucket's policy (a page or test that sets one must not leak it)."""
        client = self.client()
        for bucket in client.list_buckets().get("Buckets", []):
            client.delete_bucket_policy(Bucket=bucket["Name"])

    def reset(self) -> None:
        """Drop every bucket and object."""
        request = urllib.request.Request(f"{self.endpoint}/moto-api/reset", method="POST")
        urllib.request.urlopen(request, timeout=10).close()

    def stop(self) -> None:
        """Stop the server."""
        if self._server is not None:
            self._server.stop()


def start_moto() -> MotoServer:
    """Start moto's threaded server on a free port of 127.0.0.1."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    return MotoServer(endpoint=f"http://{host}:{port}", _server=server)
