"""Bounds and former 5xx at the edge (issue 15, items 3 and 4): each bad input gets a 4xx
in the envelope, the same on SQLite and PostgreSQL; the bounds are task_framework.limits."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

import httpx

from conftest import Server, ServerFactory
from http_contract import assert_problem
from task_framework import limits
from task_zips import build_zip, metadata, task_files

BODY: dict[str, Any] = {"mode": "sync", "inputs": [{"kind": "json", "value": {"name": "Ada"}}]}
SCHEDULE = {"cron": "0 3 * * *", "timezone": "UTC", "inputs_template": BODY["inputs"]}


def _list_paths(server: Server) -> list[str]:
    """Every documented GET route with an ``offset`` query parameter (ids filled in)."""
    found = []
    for path, operations in server.app.openapi()["paths"].items():
        get = operations.get("get", {})
        if any(p["name"] == "offset" for p in get.get("parameters", [])):
            found.append(re.sub(r"\{[^}]+\}", "x", path))
    return found


async def test_offset_beyond_64_bits(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    paths = _list_paths(server)
    assert {"/threads", "/artifacts", "/admin/api-keys", "/threads/x/logs"} <= set(paths)
    for path in paths:
        headers = server.admin if path.startswith("/admin") else server.user()
        response = await server.client.get(path, params={"offset": 2**63}, headers=headers)
        assert_problem(response, 422, "VALIDATION_FAILED")
        response = await server.client.get(path, params={"offset": 2**64 + 1}, headers=headers)
        assert_problem(response, 422, "VALIDATION_FAILED")
    largest = await server.client.get(
        "/threads", params={"offset": limits.MAX_OFFSET}, headers=server.user()
    )
    assert largest.status_code == 200, largest.text
    assert largest.json()["items"] == []


async def test_numeric_and_length_bounds(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    client = server.client
    too_big = 1e20
    for method, path, body, headers in (
        ("POST", "/threads", {**BODY, "timeout_seconds": too_big}, server.user()),
        (
            "POST",
            "/threads",
            {**BODY, "timeout_seconds": limits.MAX_TIMEOUT_SECONDS + 1},
            server.user(),
        ),
        (
            "POST",
            "/threads",
            {**BODY, "name": "n" * (limits.MAX_THREAD_NAME_CHARS + 1)},
            server.user(),
        ),
        ("POST", "/schedules", {**SCHEDULE, "max_attempts": too_big}, server.user()),
        (
            "POST",
            "/schedules",
            {**SCHEDULE, "max_attempts": limits.MAX_ATTEMPTS + 1},
            server.user(),
        ),
        ("PUT", "/admin/settings", {"max_concurrent_threads": too_big}, server.admin),
        (
            "PUT",
            "/admin/settings",
            {"max_concurrent_threads": limits.MAX_CONCURRENT_THREADS + 1},
            server.admin,
        ),
    ):
        response = await client.request(method, path, json=body, headers=headers)
        assert_problem(response, 422, "VALIDATION_FAILED")
    assert (await client.get("/threads", headers=server.admin)).json()["pagination"]["total"] == 0

    schedule = await client.post(
        "/schedules", json={**SCHEDULE, "max_attempts": limits.MAX_ATTEMPTS}, headers=server.user()
    )
    assert schedule.status_code == 201, schedule.text
    updated = await client.patch(
        f"/schedules/{schedule.json()['id']}", json={"max_attempts": too_big}, headers=server.user()
    )
    assert_problem(updated, 422, "VALIDATION_FAILED")
    thread = await client.post(
        "/threads",
        json={**BODY, "name": "n" * limits.MAX_THREAD_NAME_CHARS, "timeout_seconds": 60},
        headers=server.user(),
    )
    assert thread.status_code == 201, thread.text


async def test_cron_step_out_of_range(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    for cron in ("*/99999999999999999999 * * * *", "0 */25 * * *", "*/² * * * *"):
        response = await server.client.post(
            "/schedules", json={**SCHEDULE, "cron": cron}, headers=server.user()
        )
        problem = assert_problem(response, 400, "SCHEDULE_INVALID_CRON")
        assert "step" in problem["detail"], problem
    listed = await server.client.get("/schedules", headers=server.user())
    assert listed.json()["pagination"]["total"] == 0


async def test_nul_in_urls_is_refused(make_server: ServerFactory, database_url: str) -> None:
    server = await make_server(database_url=database_url)
    for path, params in (
        ("/threads", {"name": "a\x00b"}),
        ("/artifacts", {"ref": "\x00"}),
        ("/threads/thread_%00", {}),
        ("/schedules", {"task_id": "t\x00"}),
    ):
        response = await server.client.get(path, params=params, headers=server.user())
        assert_problem(
            response, 400, "VALIDATION_FAILED", detail="NUL characters are not allowed in the URL"
        )


async def _deploy(server: Server, data: bytes) -> httpx.Response:
    return await server.client.post(
        "/admin/tasks",
        files={"file": ("package.zip", data, "application/zip")},
        headers=server.admin,
    )


async def test_hostile_packages_get_400(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    empty = io.BytesIO()
    with zipfile.ZipFile(empty, "w"):
        pass
    only_dirs = io.BytesIO()
    with zipfile.ZipFile(only_dirs, "w") as archive:
        archive.writestr(zipfile.ZipInfo("folder/"), b"")
    deep = "[" * 100_000 + "]" * 100_000
    newline_name = {**task_files("greet"), "task_metadata.json": metadata("greet\n")}
    for data, detail in (
        (empty.getvalue(), "The package contains no files"),
        (only_dirs.getvalue(), "The package contains no files"),
        (build_zip({**task_files(), "task_metadata.json": deep}), "task_metadata.json is nested"),
        (build_zip(newline_name), "task name 'greet\n' is not a safe identifier"),
        (
            build_zip({**task_files(), "task_metadata.json": metadata(version="1.0\n")}),
            "task version '1.0\n' is not a safe identifier",
        ),
    ):
        response = await _deploy(server, data)
        problem = assert_problem(response, 400, "INVALID_TASK_PACKAGE")
        assert str(problem["detail"]).startswith(detail), problem
    assert (await server.client.get("/admin/tasks", headers=server.admin)).json()["tasks"] == []


async def test_credential_names_refuse_a_trailing_newline(make_server: ServerFactory) -> None:
    server = await make_server()
    response = await server.client.put(
        "/admin/credentials/AB%0A", json={"value": "secret"}, headers=server.admin
    )
    assert_problem(response, 400, "VALIDATION_FAILED")
    listed = await server.client.get("/admin/credentials", headers=server.admin)
    assert listed.json()["credentials"] == []


def _multipart(disposition: bytes) -> tuple[bytes, dict[str, str]]:
    boundary = b"tfboundary"
    body = (
        b"--" + boundary + b"\r\n"
        b'Content-Disposition: form-data; name="file"; ' + disposition + b"\r\n"
        b"Content-Type: text/plain\r\n\r\n"
        b"hello\r\n"
        b"--" + boundary + b"--\r\n"
    )
    return body, {"Content-Type": "multipart/form-data; boundary=tfboundary"}


async def test_multipart_filenames_are_decoded(make_server: ServerFactory) -> None:
    server = await make_server()
    for disposition, expected in (
        ('filename="café€.txt"'.encode(), "café€.txt"),  # raw UTF-8, outside Latin-1
        (b'filename="caf\xe9.txt"', "café.txt"),  # raw Latin-1
        (b"filename=\"cafe.txt\"; filename*=UTF-8''caf%C3%A9.txt", "café.txt"),  # RFC 5987
        (b"filename*=utf-8''%E2%82%AC.txt", "€.txt"),
    ):
        body, headers = _multipart(disposition)
        response = await server.client.post(
            "/files", content=body, headers={**server.user(), **headers}
        )
        assert response.status_code == 200, (disposition, response.text)
        assert response.json()["filename"] == expected
        info = await server.client.get(
            f"/files/{response.json()['file_ref']}", headers=server.user()
        )
        assert info.status_code == 200
        assert "filename*=UTF-8''" in info.headers["content-disposition"]


async def test_non_ascii_digits_are_not_numbers(make_server: ServerFactory) -> None:
    """str.isdigit() accepts "¹" and "²", which int() refuses (found by schemathesis)."""
    server = await make_server()
    body, headers = _multipart(b'filename="a.txt"')
    upload = await server.client.post("/files", content=body, headers={**server.user(), **headers})
    ref = upload.json()["file_ref"]
    for method in ("GET", "PUT"):
        response = await server.client.request(
            method, f"/files/{ref}", params={"signature": "null", "expires": "¹"}, content=b"x"
        )
        assert_problem(response, 403, "SIGNATURE_INVALID")
    ranged_headers: dict[str, Any] = {**server.user(), "Range": "bytes=²-".encode()}
    ranged = await server.client.get(f"/files/{ref}", headers=ranged_headers)
    assert ranged.status_code == 200, ranged.text  # an unreadable Range is ignored
    assert ranged.content == b"hello"
