"""The OpenAPI document is complete enough for Swagger UI's "Try it out" with any key,
and the documentation pages load only the server's own assets."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from task_framework.app import create_app
from task_framework.settings import Settings

METHODS = ("get", "head", "post", "put", "patch", "delete")
PUBLIC = {("get", "/health"), ("get", "/metrics"), ("get", "/task/metadata")}
"""The only operations that take no key (API.md §2, class P)."""
SIGNED = {("get", "/files/{file_ref}"), ("head", "/files/{file_ref}"), ("put", "/files/{file_ref}")}
"""K or S: an API key, or none with a pre-signed URL."""
IDENTITY_HEADERS = ("X-User-Id", "X-App-Id")
REQUEST_EXAMPLES = {
    ("post", "/threads"): {"sync", "async"},
    ("post", "/schedules"): None,
    ("post", "/webhooks"): None,
    ("put", "/admin/credentials/{name}"): None,
    ("post", "/admin/api-keys"): None,
}


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Any:
    return create_app(Settings(data_dir=tmp_path_factory.mktemp("openapi")))


@pytest.fixture(scope="module")
def document(app: Any) -> dict[str, Any]:
    spec: dict[str, Any] = app.openapi()
    return spec


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    # No lifespan: these routes need no service.
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
        yield client


def operations(document: dict[str, Any]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def test_every_operation_is_described(document: dict[str, Any]) -> None:
    missing = [
        f"{method.upper()} {path}"
        for method, path, operation in operations(document)
        if not (operation.get("summary") and operation.get("description", "").strip())
    ]
    assert missing == []
    assert len(list(operations(document))) >= 69


def test_key_headers_are_security_schemes(document: dict[str, Any]) -> None:
    schemes = document["components"]["securitySchemes"]
    assert {name: (s["type"], s["in"], s["name"]) for name, s in schemes.items()} == {
        "ApiKey": ("apiKey", "header", "X-API-Key"),
        "AdminApiKey": ("apiKey", "header", "X-Admin-API-Key"),
    }
    for method, path, operation in operations(document):
        security = operation.get("security")
        where = f"{method.upper()} {path}"
        if (method, path) in PUBLIC:
            assert not security, where
        elif path.startswith("/admin/"):
            assert security == [{"AdminApiKey": []}, {"ApiKey": []}], where
        elif (method, path) in SIGNED:
            assert security == [{"ApiKey": []}, {}], where
        else:
            assert security == [{"ApiKey": []}], where
        # The keys are schemes, not parameters: Swagger UI's Authorize fills them.
        headers = {p["name"].lower() for p in operation.get("parameters", [])}
        assert not headers & {"x-api-key", "x-admin-api-key"}, where


def test_operations_with_a_key_declare_the_identity_headers(document: dict[str, Any]) -> None:
    for method, path, operation in operations(document):
        if (method, path) in PUBLIC:
            continue
        params = {p["name"]: p for p in operation.get("parameters", []) if p["in"] == "header"}
        for name in IDENTITY_HEADERS:
            where = f"{method.upper()} {path} lacks {name}"
            assert name in params, where
            assert params[name]["required"] is False, where
            description = params[name]["description"]
            assert "METADATA_REQUIRED" in description, where
            assert "query" in description, where


def test_main_operations_have_examples(document: dict[str, Any]) -> None:
    paths = document["paths"]
    for (method, path), names in REQUEST_EXAMPLES.items():
        media = paths[path][method]["requestBody"]["content"]["application/json"]
        assert media.get("examples"), f"{method.upper()} {path}"
        if names is not None:
            assert set(media["examples"]) == names
    created = paths["/threads"]["post"]["responses"]
    thread = created["201"]["content"]["application/json"]["examples"]["succeeded"]["value"]
    assert thread["state"] == "succeeded"
    # Responses carry every field, nulls included, and so do their examples.
    assert thread["error"] is None
    assert thread["outputs"][0]["file_ref"] is None
    queued = created["202"]["content"]["application/json"]["examples"]["queued"]["value"]
    assert queued["state"] == "queued"
    assert queued["started_at"] is None
    artifact = paths["/artifacts/{artifact_id}"]["get"]["responses"]["200"]["content"]
    assert artifact["application/json"]["examples"]["artifact"]["value"]["kind"] == "json"
    envelope = document["components"]["schemas"]["ErrorEnvelope"]["examples"][0]
    assert envelope["detail"]["code"] == "THREAD_NOT_FOUND"


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_local_assets(client: httpx.AsyncClient, page: str) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    html = response.text
    urls = re.findall(r"""(?:src|href)=["']([^"']+)["']""", html)
    urls += re.findall(r"url: '([^']+)'", html)
    assert urls
    for url in urls:
        assert url.startswith("/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
    assert "googleapis" not in html
    assert "cdn." not in html


def test_vendored_assets_keep_their_licences() -> None:
    from task_framework.api.docs import ASSETS_DIR

    names = {path.name for path in Path(ASSETS_DIR).iterdir()}
    assert {"swagger-ui-dist.LICENSE", "redoc.LICENSE", "README.md"} <= names
    bundle = (Path(ASSETS_DIR) / "redoc.standalone.js").read_bytes()
    assert b"cdn.redoc.ly" not in bundle
