"""Integrity: checksums verified on full reads and copies; S3 checksum headers on upload."""

from __future__ import annotations

import pytest

from storeroom import FileObject, IntegrityError, ObstoreBackend
from tests.servers.moto import MotoServer
from tests.servers.proxy import RecordingProxy


@pytest.mark.s3
def test_s3_checksum_algorithm_sends_a_checksum_the_server_verifies(
    moto_server: MotoServer, s3_bucket: str
) -> None:
    proxy = RecordingProxy(moto_server.endpoint).start()
    try:
        backend = ObstoreBackend(
            "checked", f"s3://{s3_bucket}/",
            aws_access_key_id=moto_server.access_key,
            aws_secret_access_key=moto_server.secret_key,
            aws_region=moto_server.region, aws_endpoint=proxy.endpoint, aws_allow_http=True,
            aws_checksum_algorithm="SHA256",
        )
        FileObject(backend=backend, filename="c.txt", content=b"checked bytes").save()
    finally:
        proxy.stop()
    (put,) = proxy.requests
    assert put.method == "PUT" and "x-amz-checksum-sha256" in put.headers
    assert moto_server.client().get_object(Bucket=s3_bucket, Key="c.txt")["Body"].read() == (
        b"checked bytes"
    )


def test_corruption_in_the_store_is_detected_on_full_read_and_named() -> None:
    backend = ObstoreBackend("store", "memory://")
    f = FileObject(backend=backend, filename="ledger.csv", content=b"a,b\n1,2\n").save()
    backend.put("ledger.csv", b"a,b\n1,3\n")
    with pytest.raises(IntegrityError) as caught:
        f.get_content()
    assert "'ledger.csv'" in str(caught.value) and "'store'" in str(caught.value)
