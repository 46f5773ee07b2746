"""FileObject as a value: pydantic v2, msgspec, Litestar and FastAPI over HTTP.

The public form shows what a client may see (filename, size, type, checksum, a signed URL
when asked for) and never takes storage internals (backend, path) from a client.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated, Any

import msgspec
import pytest
from pydantic import BaseModel, TypeAdapter, ValidationError

from storeroom import FileObject, StorageRegistry
from storeroom.backends.obstore import ObstoreBackend
from storeroom.serialization import INTERNALS, PUBLIC, FileForm
from storeroom.signing import configure_signing
from storeroom.testing import registry_snapshot

PUBLIC_KEYS = {"filename", "size", "content_type", "checksum"}
SCHEMA_KEYS = PUBLIC_KEYS | {"media"}  # media: present when the upload was analysed
SECRET = "a-long-random-secret-for-serialization-tests"


@pytest.fixture
def saved() -> Iterator[FileObject]:
    with registry_snapshot() as registry:
        registry._backends.clear()
        backend = registry.register_backend(ObstoreBackend(key="files", fs="memory:///"))
        configure_signing(backend, secret=SECRET, base_url="http://testserver/files")
        file = FileObject(
            backend="files",
            filename="report.pdf",
            path="private/9f/report.pdf",
            content=b"%PDF-1.7",
            metadata={"owner": "alice"},
        )
        file.save()
        yield file


class Document(BaseModel):
    title: str
    file: FileObject
    download: Annotated[FileObject, FileForm(url=600)] | None = None
    stored: Annotated[FileObject, INTERNALS] | None = None


# -- pydantic ---------------------------------------------------------------------------------


def test_pydantic_serializes_the_public_form_without_storage_internals(saved: FileObject) -> None:
    dumped = Document(title="q3", file=saved).model_dump(mode="json")
    assert dumped["file"] == {
        "filename": "report.pdf",
        "size": 8,
        "content_type": "application/pdf",
        "checksum": saved.checksum,
    }
    text = Document(title="q3", file=saved).model_dump_json()
    assert "private/9f" not in text and '"files"' not in text and "alice" not in text


def test_pydantic_adds_a_signed_url_when_asked_for_and_internals_when_asked_for(
    saved: FileObject,
) -> None:
    dumped = Document(title="q3", file=saved, download=saved, stored=saved).model_dump(mode="json")
    assert set(dumped["download"]) == PUBLIC_KEYS | {"url"}
    assert dumped["download"]["url"].startswith(
        "http://testserver/files/files/private/9f/report.pdf?"
    )
    assert dumped["stored"]["backend"] == "files"
    assert dumped["stored"]["path"] == "private/9f/report.pdf"
    assert dumped["stored"]["metadata"] == {"owner": "alice"}


def test_pydantic_validates_from_a_dict_and_from_json(saved: FileObject) -> None:
    from_dict = Document.model_validate(
        {"title": "t", "file": {"filename": "a.txt", "size": 3, "checksum": None}}
    )
    assert isinstance(from_dict.file, FileObject)
    assert (from_dict.file.filename, from_dict.file.size, from_dict.file.content_type) == (
        "a.txt",
        3,
        "text/plain",
    )
    assert from_dict.file.backend is None  # the application decides where it goes
    round_trip = Document.model_validate_json(
        Document(title="t", file=saved, download=saved, stored=saved).model_dump_json()
    )
    assert round_trip.file.checksum == saved.checksum
    assert round_trip.download is not None and round_trip.download.backend is None
    assert round_trip.stored is not None
    assert round_trip.stored.to_dict() == saved.to_dict()
    assert round_trip.stored.get_content() == b"%PDF-1.7"
    assert Document(title="t", file=saved).file is saved  # an instance passes as it is


@pytest.mark.parametrize(
    "file",
    [
        {"filename": "a.txt", "backend": "files"},
        {"filename": "a.txt", "path": "../other-user/secret.pdf"},
        {"filename": "a.txt", "size": -1},
        {"filename": ""},
        {"size": 3},
        {"filename": "a.txt", "surprise": 1},
        "a.txt",
    ],
)
def test_pydantic_public_form_refuses_internals_and_bad_values(file: Any) -> None:
    with pytest.raises(ValidationError):
        Document.model_validate({"title": "t", "file": file})
    with pytest.raises(ValidationError):
        Document.model_validate_json(json.dumps({"title": "t", "file": file}))


def test_pydantic_url_from_a_client_is_ignored() -> None:
    doc = Document.model_validate(
        {"title": "t", "file": {"filename": "a.txt", "url": "http://evil.example/x"}}
    )
    assert doc.file.path == "a.txt" and doc.file.backend is None


def test_pydantic_json_schema_has_the_public_fields_and_the_url_when_asked_for() -> None:
    schema = Document.model_json_schema(mode="serialization")
    props = schema["properties"]
    assert set(props["file"]["properties"]) == SCHEMA_KEYS
    assert props["file"]["additionalProperties"] is False
    download = props["download"]["anyOf"][0]
    assert set(download["properties"]) == SCHEMA_KEYS | {"url"}
    assert "url" in download["required"]
    assert {"backend", "path"} <= set(props["stored"]["anyOf"][0]["properties"])
    validation = TypeAdapter(FileObject).json_schema(mode="validation")
    assert validation["required"] == ["filename"]
    assert "backend" not in validation["properties"]


def test_a_url_form_on_a_backend_that_cannot_sign_fails_clearly() -> None:
    with registry_snapshot() as registry:
        registry.register_backend(ObstoreBackend(key="plain", fs="memory:///"), overwrite=True)
        file = FileObject(backend="plain", filename="a.txt", content=b"a")
        file.save()
        with pytest.raises(Exception, match="cannot sign URLs"):
            FileForm(url=60).dump(file)
    with pytest.raises(ValueError, match="lifetime in seconds"):
        FileForm(url=0)


# -- msgspec ----------------------------------------------------------------------------------


class Row(msgspec.Struct):
    title: str
    file: FileObject


def test_msgspec_encodes_and_decodes_with_the_hooks(saved: FileObject) -> None:
    data = msgspec.json.encode(Row("q3", saved), enc_hook=PUBLIC.enc_hook)
    assert json.loads(data)["file"] == PUBLIC.dump(saved)
    assert b"private/9f" not in data
    row = msgspec.json.decode(data, type=Row, dec_hook=PUBLIC.dec_hook)
    assert isinstance(row.file, FileObject) and row.file.checksum == saved.checksum
    full = msgspec.json.encode(saved, enc_hook=INTERNALS.enc_hook)
    back = msgspec.json.decode(full, type=FileObject, dec_hook=INTERNALS.dec_hook)
    assert back.to_dict() == saved.to_dict()
    with pytest.raises(msgspec.ValidationError, match="storage fields are not accepted"):
        msgspec.json.decode(full, type=FileObject, dec_hook=PUBLIC.dec_hook)
    with pytest.raises(TypeError):
        msgspec.json.encode(saved)  # without the hook msgspec refuses, as it should
    schema = msgspec.json.schema(Row, schema_hook=PUBLIC.schema_hook)
    assert set(schema["$defs"]["Row"]["properties"]["file"]["properties"]) == SCHEMA_KEYS


# -- Litestar ---------------------------------------------------------------------------------


def _litestar_app(registry: StorageRegistry, saved: FileObject, **plugin: Any) -> Any:
    from litestar import Litestar, get, post
    from litestar.params import JSONBody

    from storeroom.contrib.litestar import StoreroomPlugin

    @get("/document", sync_to_thread=False)
    def one() -> FileObject:
        return saved

    @get("/documents", sync_to_thread=False)
    def many() -> list[FileObject]:
        return [saved, saved]

    @get("/model", sync_to_thread=False)
    def model() -> Document:
        return Document(title="q3", file=saved, download=saved)

    @post("/echo", sync_to_thread=False)
    def echo(data: JSONBody[FileObject]) -> dict[str, Any]:
        return {"filename": data.filename, "backend": data.backend, "size": data.size}

    return Litestar(
        [one, many, model, echo],
        plugins=[StoreroomPlugin(configure=lambda: None, registry=registry, **plugin)],
    )


def test_litestar_handler_returning_a_file_object_answers_200(saved: FileObject) -> None:
    from litestar.testing import TestClient

    from storeroom import storages

    with TestClient(_litestar_app(storages, saved)) as client:
        one = client.get("/document")
        assert one.status_code == 200, one.text
        assert one.json() == PUBLIC.dump(saved)
        many = client.get("/documents")
        assert many.status_code == 200 and many.json() == [PUBLIC.dump(saved)] * 2
        model = client.get("/model")
        assert model.status_code == 200
        assert model.json()["download"]["url"].startswith("http://testserver/files/")
        echoed = client.post("/echo", json={"filename": "new.txt", "size": 3})
        assert echoed.status_code == 201, echoed.text
        assert echoed.json() == {"filename": "new.txt", "backend": None, "size": 3}
        refused = client.post(
            "/echo", json={"filename": "x", "backend": "files", "path": "private/9f/report.pdf"}
        )
        assert refused.status_code == 400, refused.text
        openapi = client.get("/schema/openapi.json").json()
    schema = openapi["paths"]["/document"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert schema["title"] == "FileObject"
    assert set(schema["properties"]) == SCHEMA_KEYS and schema["additionalProperties"] is False


def test_litestar_plugin_form_with_url_and_internals(saved: FileObject) -> None:
    from litestar.testing import TestClient

    from storeroom import storages

    app = _litestar_app(storages, saved, files_as=FileForm(url=60, internals=True))
    with TestClient(app) as client:
        body = client.get("/document").json()
        openapi = client.get("/schema/openapi.json").json()
    assert body["path"] == "private/9f/report.pdf" and body["url"].startswith("http://testserver/")
    schema = openapi["paths"]["/document"]["get"]["responses"]["200"]["content"][
        "application/json"
    ]["schema"]
    assert {"url", "backend", "path"} <= set(schema["properties"])


def test_litestar_without_the_plugin_cannot_encode_a_file_object(saved: FileObject) -> None:
    from litestar import Litestar, get
    from litestar.testing import TestClient

    @get("/document", sync_to_thread=False)
    def one() -> FileObject:
        return saved

    with TestClient(Litestar([one])) as client:
        assert client.get("/document").status_code == 500


# -- FastAPI ----------------------------------------------------------------------------------


def test_fastapi_response_models_and_return_annotations(saved: FileObject) -> None:
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    app = FastAPI()

    @app.get("/document", response_model=Document)
    def document() -> Any:
        return {"title": "q3", "file": saved, "download": saved}

    @app.get("/file")
    def file() -> FileObject:
        return saved

    @app.post("/echo")
    def echo(doc: Document) -> dict[str, Any]:
        return {"filename": doc.file.filename, "backend": doc.file.backend}

    client = TestClient(app)
    body = client.get("/document").json()
    assert body["file"] == PUBLIC.dump(saved)
    assert body["download"]["url"].startswith("http://testserver/files/files/private/9f/")
    assert client.get("/file").json() == PUBLIC.dump(saved)
    assert client.post("/echo", json={"title": "t", "file": {"filename": "n.txt"}}).json() == {
        "filename": "n.txt",
        "backend": None,
    }
    refused = client.post(
        "/echo", json={"title": "t", "file": {"filename": "n.txt", "backend": "files"}}
    )
    assert refused.status_code == 422
    schemas = client.get("/openapi.json").json()["components"]["schemas"]
    output = schemas["Document-Output"]["properties"]
    assert set(output["file"]["properties"]) == SCHEMA_KEYS
    assert set(output["download"]["anyOf"][0]["properties"]) == SCHEMA_KEYS | {"url"}
    accepted = schemas["Document-Input"]["properties"]["file"]
    assert accepted["required"] == ["filename"] and "backend" not in accepted["properties"]
