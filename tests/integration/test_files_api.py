"""The files API (API.md §8) over local and S3 storage (moto on loopback)."""

# ruff: noqa: F811 - pytest fixtures imported from s3_support are parameters by name

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

import httpx
import pytest

from conftest import Server, ServerFactory
from s3_support import (  # noqa: F401 - fixtures are used by name
    MiB,
    S3Bucket,
    backend,
    moto_endpoint,
    s3_bucket,
    write_file,
)

LARGE_BYTES = 200 * MiB
KEY = "files-test-encryption-passphrase"  # PostgreSQL deployments require one


async def start(make_server: ServerFactory, backend: dict[str, Any], **extra: Any) -> Server:
    settings = {k: v for k, v in backend.items() if not k.startswith("_")}
    return await make_server(dev_tasks=[], **settings, **extra)


async def upload(
    server: Server, data: bytes, *, who: dict[str, str] | None = None, **form: str
) -> dict[str, Any]:
    response = await server.client.post(
        "/files",
        headers=who or server.user(),
        files={"file": ("data.bin", data, "application/x-test")},
        data=form,
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def stored_objects(server: Server, backend: dict[str, Any]) -> list[str]:
    bucket: S3Bucket | None = backend.get("_bucket")
    if bucket is not None:
        return bucket.keys()
    root = server.settings.resolved_files_dir
    return sorted(os.listdir(root)) if root.exists() else []


@pytest.mark.slow
async def test_large_round_trip(
    make_server: ServerFactory, backend: dict[str, Any], tmp_path: Path
) -> None:
    server = await start(make_server, backend)
    source = tmp_path / "large.bin"
    expected = write_file(source, LARGE_BYTES)
    with source.open("rb") as handle:
        response = await server.client.post(
            "/files", headers=server.user(), files={"file": ("large.bin", handle)}
        )
    assert response.status_code == 200, response.text
    stored = response.json()
    assert (stored["size"], stored["sha256"]) == (LARGE_BYTES, expected)
    assert stored["media_type"] == "application/octet-stream"
    ref = stored["file_ref"]

    digest, total = hashlib.sha256(), 0
    async with server.client.stream("GET", f"/files/{ref}", headers=server.user()) as got:
        assert got.status_code == 200
        assert got.headers["etag"] == f'"{expected}"'
        assert got.headers["content-length"] == str(LARGE_BYTES)
        async for chunk in got.aiter_bytes():
            digest.update(chunk)
            total += len(chunk)
    assert (total, digest.hexdigest()) == (LARGE_BYTES, expected)

    start_at = 150 * MiB + 17
    ranged = await server.client.get(
        f"/files/{ref}", headers={**server.user(), "Range": f"bytes={start_at}-{start_at + 999}"}
    )
    assert ranged.status_code == 206
    assert ranged.headers["content-range"] == f"bytes {start_at}-{start_at + 999}/{LARGE_BYTES}"
    with source.open("rb") as handle:
        handle.seek(start_at)
        assert ranged.content == handle.read(1000)


async def test_download_headers_and_ranges(
    make_server: ServerFactory, backend: dict[str, Any]
) -> None:
    server = await start(make_server, backend)
    data = bytes(range(256)) * 10
    stored = await upload(server, data, filename='résumé "final".pdf', media_type="application/pdf")
    ref = stored["file_ref"]
    assert stored["filename"] == 'résumé "final".pdf'
    head = await server.client.head(f"/files/{ref}", headers=server.user())
    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["content-type"] == "application/pdf"
    assert head.headers["content-length"] == str(len(data))
    assert head.headers["accept-ranges"] == "bytes"
    assert head.headers["x-content-type-options"] == "nosniff"
    assert head.headers["content-disposition"] == (
        'attachment; filename="r_sum_ _final_.pdf"; '
        "filename*=UTF-8''r%C3%A9sum%C3%A9%20%22final%22.pdf"
    )

    async def ranged(spec: str) -> httpx.Response:
        return await server.client.get(f"/files/{ref}", headers={**server.user(), "Range": spec})

    suffix = await ranged("bytes=-10")
    assert (suffix.status_code, suffix.content) == (206, data[-10:])
    open_ended = await ranged("bytes=2500-")
    assert (open_ended.status_code, open_ended.content) == (206, data[2500:])
    multi = await ranged("bytes=0-1,5-6")
    assert (multi.status_code, multi.content) == (200, data)
    beyond = await ranged(f"bytes={len(data)}-")
    assert beyond.status_code == 416
    assert beyond.json()["detail"]["code"] == "RANGE_NOT_SATISFIABLE"


async def test_two_step_upload_with_presigned_put(
    make_server: ServerFactory, backend: dict[str, Any]
) -> None:
    server = await start(make_server, backend)
    data = b"two-step " * 1000
    reserved = await server.client.post(
        "/uploads",
        headers=server.user(),
        json={"filename": "notes.txt", "media_type": "text/plain", "size": len(data)},
    )
    assert reserved.status_code == 201, reserved.text
    body = reserved.json()
    assert body["method"] == "PUT"
    assert body["headers"] == {"Content-Type": "text/plain"}
    ref = body["file_ref"]
    # Not downloadable before the bytes arrive.
    missing = await server.client.get(f"/files/{ref}", headers=server.user())
    assert missing.status_code == 404
    if "_bucket" in backend:
        async with httpx.AsyncClient() as direct:
            put = await direct.put(body["upload_url"], content=data, headers=body["headers"])
        assert put.status_code == 200, put.text
    else:
        assert body["upload_url"].startswith(f"http://testserver/files/{ref}?expires=")
        put = await server.client.put(body["upload_url"], content=data, headers=body["headers"])
        assert put.status_code == 200, put.text
        assert put.json()["sha256"] == hashlib.sha256(data).hexdigest()
    got = await server.client.get(f"/files/{ref}", headers=server.user())
    assert got.status_code == 200
    assert got.content == data
    assert got.headers["etag"] == f'"{hashlib.sha256(data).hexdigest()}"'
    listed = (await server.client.get("/files", headers=server.user())).json()
    assert [(f["file_ref"], f["filename"], f["size"]) for f in listed["items"]] == [
        (ref, "notes.txt", len(data))
    ]


async def test_put_checks_declared_size_and_media_type(
    make_server: ServerFactory, backend: dict[str, Any]
) -> None:
    server = await start(make_server, backend)
    reserved = await server.client.post(
        "/uploads", headers=server.user(), json={"media_type": "text/csv", "size": 10}
    )
    ref = reserved.json()["file_ref"]

    async def put(content: bytes, media_type: str = "text/csv") -> httpx.Response:
        return await server.client.put(
            f"/files/{ref}", content=content, headers={**server.user(), "Content-Type": media_type}
        )

    assert (await put(b"x" * 9)).status_code == 400
    too_big = await put(b"x" * 11)
    assert too_big.status_code == 413
    assert too_big.json()["detail"]["code"] == "FILE_SIZE_EXCEEDED"
    assert (await put(b"x" * 10, "image/png")).status_code == 400
    assert (await server.client.get(f"/files/{ref}", headers=server.user())).status_code == 404
    assert (await put(b"y" * 10, "text/csv; charset=utf-8")).status_code == 200
    assert (await server.client.get(f"/files/{ref}", headers=server.user())).content == b"y" * 10
    # Only issued refs are accepted.
    unknown = await server.client.put(
        "/files/file_0123456789abcdef0123456789abcdef", content=b"x", headers=server.user()
    )
    assert unknown.status_code == 404


def _with_query(url: str, **changes: str) -> str:
    parts = urlsplit(url)
    query = dict(parse_qsl(parts.query))
    query.update(changes)
    return f"{parts.path}?{urlencode(query)}"


async def test_signed_urls_without_key_and_403s(
    make_server: ServerFactory, backend: dict[str, Any]
) -> None:
    server = await start(make_server, backend)
    data = b"signed content"
    ref = (await upload(server, data))["file_ref"]
    other = (await upload(server, b"other"))["file_ref"]
    signer = server.services.files.signer
    good = await signer.sign("GET", ref, expires_in=60)
    url = f"/files/{ref}?{good.query()}"
    got = await server.client.get(url)
    assert (got.status_code, got.content) == (200, data)
    assert (await server.client.head(url)).status_code == 200
    legacy = await server.client.get(
        f"/files/{ref}?expires={good.expires}&signature={good.signature}"
    )
    assert legacy.status_code == 200  # URLs without a key id still verify

    async def code(target: str, method: str = "GET", **kwargs: Any) -> str:
        response = await server.client.request(method, target, **kwargs)
        assert response.status_code == 403, response.text
        return str(response.json()["detail"]["code"])

    expired = await signer.sign("GET", ref, expires_in=-5)
    assert await code(f"/files/{ref}?{expired.query()}") == "FILE_DOWNLOAD_EXPIRED"
    put_expired = await signer.sign("PUT", ref, expires_in=-5)
    assert await code(f"/files/{ref}?{put_expired.query()}", "PUT", content=b"x") == (
        "FILE_UPLOAD_EXPIRED"
    )
    flipped = good.signature[:-1] + ("0" if good.signature[-1] != "0" else "1")
    assert await code(_with_query(url, signature=flipped)) == "SIGNATURE_INVALID"
    assert await code(_with_query(url, expires=str(good.expires + 3600))) == "SIGNATURE_INVALID"
    assert await code(_with_query(url, kid="000000000000")) == "SIGNATURE_INVALID"
    assert await code(_with_query(url, signature="é")) == "SIGNATURE_INVALID"
    assert await code(f"/files/{other}?{good.query()}") == "SIGNATURE_INVALID"
    assert await code(url, "PUT", content=b"overwrite") == "SIGNATURE_INVALID"
    # A signature decides alone: a valid key does not rescue a bad signature.
    bad = _with_query(url, signature=flipped)
    assert await code(bad, headers=server.user()) == "SIGNATURE_INVALID"
    put_ok = await signer.sign("PUT", ref, expires_in=60)
    assert await code(f"/files/{ref}?{put_ok.query()}") == "SIGNATURE_INVALID"
    # Nothing was overwritten by the refused PUTs.
    assert (await server.client.get(url)).content == data


async def test_cross_tenant_access_is_404(
    make_server: ServerFactory, backend: dict[str, Any]
) -> None:
    server = await start(make_server, backend)
    ref = (await upload(server, b"mine"))["file_ref"]
    stranger = server.user("app1", "someone-else")
    for method in ("GET", "HEAD", "DELETE"):
        response = await server.client.request(method, f"/files/{ref}", headers=stranger)
        assert response.status_code == 404, method
    response = await server.client.get(f"/files/{ref}", headers=stranger)
    assert response.json()["detail"]["code"] == "FILE_NOT_FOUND"
    put = await server.client.put(f"/files/{ref}", content=b"theirs", headers=stranger)
    assert put.status_code == 404
    assert (await server.client.get("/files", headers=stranger)).json()["items"] == []
    other_app = server.user("app2", "user1")
    assert (await server.client.get(f"/files/{ref}", headers=other_app)).status_code == 404
    admin_list = (await server.client.get("/files", headers=server.admin)).json()
    assert [f["file_ref"] for f in admin_list["items"]] == [ref]
    assert (await server.client.get(f"/files/{ref}", headers=server.user())).content == b"mine"
    assert (await server.client.get(f"/files/{ref}")).status_code == 401


async def test_oversized_uploads_are_413_and_store_nothing(
    make_server: ServerFactory, backend: dict[str, Any]
) -> None:
    server = await start(make_server, backend, max_upload_bytes=MiB)
    response = await server.client.post(
        "/files", headers=server.user(), files={"file": ("big.bin", b"x" * (3 * MiB))}
    )
    assert response.status_code == 413
    assert response.json()["detail"]["code"] == "FILE_SIZE_EXCEEDED"
    assert (await server.client.get("/files", headers=server.admin)).json()["items"] == []
    assert stored_objects(server, backend) == []
    too_big = await server.client.post(
        "/uploads",
        headers=server.user(),
        json={"media_type": "application/zip", "size": MiB + 1},
    )
    assert too_big.status_code == 413
    exact = await upload(server, b"z" * MiB)
    assert exact["size"] == MiB


async def test_media_type_comes_from_the_name_when_the_client_sends_none(
    make_server: ServerFactory,
) -> None:
    server = await make_server(dev_tasks=[])

    async def stored_type(name: str, part_type: str | None, **form: str) -> str:
        file = (name, b"a,b\n1,2\n") if part_type is None else (name, b"a,b\n", part_type)
        response = await server.client.post(
            "/files", headers=server.user(), files={"file": file}, data=form
        )
        assert response.status_code == 200, response.text
        return str(response.json()["media_type"])

    # httpx (like curl and browsers) sends application/octet-stream for a type it does not
    # know; the extension says more.
    assert await stored_type("report.csv", None) == "text/csv"
    assert await stored_type("report.csv", "application/octet-stream") == "text/csv"
    assert await stored_type("blob", "application/octet-stream") == "application/octet-stream"
    assert await stored_type("report.csv", "application/vnd.ms-excel") == (
        "application/vnd.ms-excel"
    )
    explicit = {"media_type": "application/octet-stream"}
    assert await stored_type("report.csv", None, **explicit) == "application/octet-stream"


@pytest.mark.parametrize(
    "ref",
    ["file_short", "file_abc$defghijklmn", "x" * 20, "file_" + "a" * 130, "FILE_0123456789abcd"],
)
async def test_malformed_refs_are_400(make_server: ServerFactory, ref: str) -> None:
    server = await make_server(dev_tasks=[])
    for method in ("GET", "HEAD", "PUT", "DELETE"):
        response = await server.client.request(method, f"/files/{ref}", headers=server.user())
        assert response.status_code == 400, (method, response.text)
        if method != "HEAD":
            assert response.json()["detail"]["code"] == "VALIDATION_FAILED"


async def test_delete_and_list(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(dev_tasks=[], database_url=database_url, encryption_key=KEY)
    refs = [(await upload(server, f"file {i}".encode()))["file_ref"] for i in range(3)]
    await upload(server, b"text", media_type="text/plain")
    first = (await server.client.get("/files?limit=2", headers=server.user())).json()
    assert first["total"] == 4
    assert first["pagination"]["has_more"]
    rest = (
        await server.client.get(
            f"/files?limit=2&cursor={first['pagination']['cursor']}", headers=server.user()
        )
    ).json()
    listed = [f["file_ref"] for f in first["items"] + rest["items"]]
    assert set(refs) < set(listed)
    assert len(listed) == 4
    only_text = (
        await server.client.get("/files?media_type=text/plain", headers=server.user())
    ).json()
    assert only_text["total"] == 1
    deleted = await server.client.delete(f"/files/{refs[0]}", headers=server.user())
    assert deleted.status_code == 204
    assert (await server.client.get(f"/files/{refs[0]}", headers=server.user())).status_code == 404
    assert (
        await server.client.delete(f"/files/{refs[0]}", headers=server.user())
    ).status_code == 404


async def test_generated_signing_key_is_shared(
    make_server: ServerFactory, database_url: str
) -> None:
    first = await make_server(dev_tasks=[], database_url=database_url, encryption_key=KEY)
    ref = (await upload(first, b"shared"))["file_ref"]
    params = await first.services.files.signer.sign("GET", ref, expires_in=60)
    second = await make_server(dev_tasks=[], database_url=database_url, encryption_key=KEY)
    assert second.services.files.signer is not first.services.files.signer
    verified = await second.services.files.verify_signature(
        "GET", ref, expires=str(params.expires), signature=params.signature, kid=params.kid
    )
    assert verified.file_ref == ref


async def test_rotated_keys_still_verify(make_server: ServerFactory) -> None:
    old = await make_server(dev_tasks=[], url_signing_key="old-secret")
    ref = (await upload(old, b"rotate"))["file_ref"]
    params = await old.services.files.signer.sign("GET", ref, expires_in=60)
    rotated = await make_server(dev_tasks=[], url_signing_key="new-secret,old-secret")
    await rotated.services.files.verify_signature(
        "GET", ref, expires=str(params.expires), signature=params.signature, kid=params.kid
    )
    fresh = await rotated.services.files.signer.sign("GET", ref, expires_in=60)
    assert fresh.kid != params.kid


async def test_multipart_errors(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    no_file = await server.client.post(
        "/files", headers=server.user(), data={"filename": "x"}, files={"other": ("a", b"b")}
    )
    assert no_file.status_code == 400
    not_multipart = await server.client.post("/files", headers=server.user(), json={"a": 1})
    assert not_multipart.status_code == 400
    broken = await server.client.post(
        "/files",
        headers={**server.user(), "Content-Type": "multipart/form-data; boundary=xyz"},
        content=b'--xyz\r\nContent-Disposition: form-data; name="file"\r\n\r\nabc',
    )
    assert broken.status_code == 400
    assert (await server.client.get("/files", headers=server.admin)).json()["items"] == []
