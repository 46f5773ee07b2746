"""The generic ``STORAGE__<KEY>__*`` form, key naming, precedence of the environment forms
and ``backend_from_url``'s choice of backend type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from storeroom import ObstoreBackend, StorageRegistry
from storeroom.backends.fsspec import FSSpecBackend
from storeroom.config import backend_from_url, configure_from_env, specs_from_env


def test_generic_form_registers_any_number_of_backends(
    s3_env: Any,
    s3_bucket: str,
    tmp_path: Path,
    registry: StorageRegistry,
    round_trip: Any,
) -> None:
    environ = {
        "STORAGE__USER_UPLOADS__URL": f"s3://{s3_bucket}/uploads",
        "STORAGE__USER_UPLOADS__AWS_REGION": "us-west-2",
        "STORAGE__ARCHIVE__TYPE": "s3",
        "STORAGE__ARCHIVE__BUCKET": s3_bucket,
        "STORAGE__ARCHIVE__PREFIX": "archive",
        "STORAGE__ARCHIVE__OPTIONS": '{"aws_region": "us-east-1"}',
        "STORAGE__LOCAL__TYPE": "local",
        "STORAGE__LOCAL__PATH": str(tmp_path),
        "STORAGE__LOCAL__DEFAULT": "true",
        "STORAGE__TMP__TYPE": "fsspec",
        "STORAGE__TMP__PROTOCOL": "memory",
        "STORAGE__TMP__PREFIX": "tmp-config-test",
    }
    backends = configure_from_env(registry, environ)
    assert registry.registered_backends() == ["archive", "local", "tmp", "user-uploads"]
    assert registry.default_key == "local"
    by_key = {b.key: b for b in backends}
    assert by_key["archive"].location == f"s3://{s3_bucket}/archive/"
    assert isinstance(by_key["tmp"], FSSpecBackend)
    for key in ("user-uploads", "archive", "local", "tmp"):
        round_trip(key, registry)


def test_uri_form_key_override_and_conventional_default_together(
    tmp_path: Path, registry: StorageRegistry
) -> None:
    environ = {
        "USER_UPLOADS_STORAGE_URI": "memory://",
        "USER_UPLOADS_STORAGE_KEY": "uploads",
        "STORAGE_BACKEND": "local",
        "UPLOAD_DIR": str(tmp_path),
    }
    configure_from_env(registry, environ)
    assert registry.registered_backends() == ["default", "uploads"]


def test_no_variables_means_the_specification_default(tmp_path: Path) -> None:
    (spec,) = specs_from_env({})
    assert (spec.key, spec.type, spec.path) == ("default", "local", "/var/app/uploads")
    (spec,) = specs_from_env({"UPLOAD_DIR": str(tmp_path)})
    assert spec.path == str(tmp_path)


def test_other_forms_suppress_the_implicit_local_default() -> None:
    specs = specs_from_env({"STORAGE__A__URL": "memory://"})
    assert [s.key for s in specs] == ["a"]
    assert specs_from_env({"STORAGE_BACKEND": "none"}) == []


def test_key_clash_between_forms_registers_nothing(registry: StorageRegistry) -> None:
    from storeroom.config import InvalidBackendSpec

    with pytest.raises(InvalidBackendSpec, match="'default' is defined twice"):
        configure_from_env(
            registry, {"STORAGE__DEFAULT__URL": "memory://", "STORAGE_BACKEND": "memory"}
        )
    assert len(registry) == 0


@pytest.mark.parametrize(
    ("url", "backend_type", "location"),
    [
        ("s3://bucket/prefix", ObstoreBackend, "s3://bucket/prefix"),
        ("gs://bucket/", ObstoreBackend, "gs://bucket/"),
        ("memory://", ObstoreBackend, "memory://"),
        ("fsspec+memory://cfg-test", FSSpecBackend, "memory:///cfg-test"),
    ],
)
def test_backend_from_url_chooses_the_backend_type(
    url: str, backend_type: type, location: str
) -> None:
    backend = backend_from_url("k", url)
    assert isinstance(backend, backend_type)
    assert backend.location == location


def test_backend_from_url_plain_path_is_local(
    tmp_path: Path, round_trip: Any, registry: StorageRegistry
) -> None:
    backend = backend_from_url("k", str(tmp_path / "files"))
    assert isinstance(backend, ObstoreBackend) and backend.kind == "local"
    registry.register_backend(backend)
    saved = round_trip("k", registry)
    assert (tmp_path / "files" / saved.path).exists()


def test_backend_from_url_passes_options(
    s3_env: Any, s3_bucket: str, round_trip: Any, registry: StorageRegistry
) -> None:
    registry.register_backend(
        backend_from_url(
            "k",
            f"s3://{s3_bucket}/",
            aws_endpoint=s3_env.endpoint,
            aws_allow_http=True,
        )
    )
    round_trip("k", registry)


def test_file_urls_are_not_mistaken_for_relative_paths(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from storeroom.config import backend_from_url

    monkeypatch.chdir(tmp_path)
    target = tmp_path / "elsewhere"
    backend = backend_from_url("files", f"file://{target}")
    backend.put("a.txt", b"x")
    assert (target / "a.txt").read_bytes() == b"x"
    assert not (tmp_path / "file:").exists()
