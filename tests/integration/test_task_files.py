"""File artifacts in both directions through a real task process, over local and S3."""

# ruff: noqa: F811 - pytest fixtures imported from s3_support are parameters by name

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from conftest import Server, ServerFactory
from s3_support import (  # noqa: F401 - fixtures are used by name
    MiB,
    backend,
    moto_endpoint,
    s3_bucket,
    write_file,
)

OUTPUT_BYTES = 200 * MiB

TASK_CODE = """
import hashlib
import os
import tempfile

from task_framework.models.artifact import Artifact

MiB = 1024 * 1024


async def run(context):
    outputs = []
    if context.params.get("mode") == "produce":
        size = int(context.params["size"])
        folder = tempfile.mkdtemp()
        path = os.path.join(folder, "generated.bin")
        digest = hashlib.sha256()
        with open(path, "wb") as handle:
            for index in range(0, size, MiB):
                block = index.to_bytes(8, "big") * (MiB // 8)
                block = block[: min(MiB, size - index)]
                digest.update(block)
                handle.write(block)
        stored = await context.upload_file(path, media_type="application/x-generated")
        os.remove(path)
        outputs.append(Artifact(kind="file", ref="generated", file_ref=stored["file_ref"]))
        outputs.append(Artifact(kind="json", ref="digest", value={"sha256": digest.hexdigest()}))
    else:
        for artifact in await context.get_input_artifacts():
            if artifact.file_ref:
                digest, size = hashlib.sha256(), 0
                async for chunk in context.iter_file(artifact.file_ref):
                    digest.update(chunk)
                    size += len(chunk)
                outputs.append(
                    Artifact(
                        kind="json",
                        ref="digest",
                        value={"sha256": digest.hexdigest(), "size": size},
                    )
                )
        try:
            await context.download_file("file_0123456789abcdef0123456789abcdef")
        except FileNotFoundError:
            outputs.append(Artifact(kind="json", ref="foreign", value={"refused": True}))
    await context.publish_output_artifacts(outputs)
"""


@pytest.fixture(scope="module")
def file_task(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("file_task")
    (folder / "task_metadata.json").write_text(
        json.dumps({"name": "filehasher", "version": "1.0.0", "entry_point": "task:run"})
    )
    (folder / "task.py").write_text(TASK_CODE)
    return folder


async def start(
    make_server: ServerFactory,
    backend: dict[str, Any],
    folder: Path,
) -> Server:
    settings = {k: v for k, v in backend.items() if not k.startswith("_")}
    return await make_server(dev_tasks=[folder], **settings)


async def run_thread(server: Server, body: dict[str, Any]) -> dict[str, Any]:
    response = await server.client.post(
        "/threads", json={"mode": "sync", **body}, headers=server.user(), timeout=300
    )
    assert response.status_code == 201, response.text
    thread: dict[str, Any] = response.json()
    assert thread["state"] == "succeeded", thread["error"]
    return thread


@pytest.mark.slow
async def test_task_hashes_an_input_file(
    make_server: ServerFactory,
    backend: dict[str, Any],
    file_task: Path,
    tmp_path: Path,
) -> None:
    server = await start(make_server, backend, file_task)
    source = tmp_path / "input.bin"
    expected = write_file(source, 20 * MiB + 3)
    with source.open("rb") as handle:
        stored = (
            await server.client.post(
                "/files", headers=server.user(), files={"file": ("input.bin", handle)}
            )
        ).json()
    thread = await run_thread(
        server, {"inputs": [{"kind": "file", "ref": "in", "file_ref": stored["file_ref"]}]}
    )
    assert thread["inputs"][0]["sha256"] == expected
    outputs = {o["ref"]: o["value"] for o in thread["outputs"]}
    assert outputs["digest"] == {"sha256": expected, "size": 20 * MiB + 3}
    assert outputs["foreign"] == {"refused": True}

    # The input artifact's download URL works without a key.
    artifact_id = thread["inputs"][0]["id"]
    answer = await server.client.get(
        f"/artifacts/{artifact_id}/download?expires_in=60", headers=server.user()
    )
    assert answer.status_code == 200, answer.text
    assert answer.json()["expires_in"] == 60
    if "_bucket" not in backend:
        fetched = await server.client.head(answer.json()["download_url"])
        assert fetched.status_code == 200
        assert fetched.headers["etag"] == f'"{expected}"'
    stranger = server.user("app1", "other")
    hidden = await server.client.get(f"/artifacts/{artifact_id}/download", headers=stranger)
    assert hidden.status_code == 404
    json_output = next(o for o in thread["outputs"] if o["ref"] == "digest")
    unsupported = await server.client.get(
        f"/artifacts/{json_output['id']}/download", headers=server.user()
    )
    assert unsupported.status_code == 400
    assert unsupported.json()["detail"]["code"] == "ARTIFACT_DOWNLOAD_NOT_SUPPORTED"
    bad_expiry = await server.client.get(
        f"/artifacts/{artifact_id}/download?expires_in=604801", headers=server.user()
    )
    assert bad_expiry.status_code == 422


@pytest.mark.slow
async def test_task_publishes_a_large_output_file(
    make_server: ServerFactory,
    backend: dict[str, Any],
    file_task: Path,
) -> None:
    server = await start(make_server, backend, file_task)
    thread = await run_thread(
        server,
        {
            "inputs": [{"kind": "json", "value": {}}],
            "params": {"mode": "produce", "size": OUTPUT_BYTES},
        },
    )
    outputs = {o["ref"]: o for o in thread["outputs"]}
    expected = outputs["digest"]["value"]["sha256"]
    produced = outputs["generated"]
    assert (produced["size"], produced["sha256"]) == (OUTPUT_BYTES, expected)
    ref = produced["file_ref"]

    digest = hashlib.sha256()
    async with server.client.stream("GET", f"/files/{ref}", headers=server.user()) as whole:
        assert whole.status_code == 200
        assert whole.headers["content-type"] == "application/x-generated"
        async for chunk in whole.aiter_bytes():
            digest.update(chunk)
    assert digest.hexdigest() == expected

    offset = 123 * MiB + 5
    ranged = await server.client.get(
        f"/files/{ref}", headers={**server.user(), "Range": f"bytes={offset}-{offset + MiB - 1}"}
    )
    assert ranged.status_code == 206
    block_start = offset - offset % MiB
    pattern = block_start.to_bytes(8, "big") * (MiB // 8)
    assert (
        ranged.content
        == (pattern + (block_start + MiB).to_bytes(8, "big") * (MiB // 8))[
            offset - block_start : offset - block_start + MiB
        ]
    )
    # The owner sees the task's file; another user does not.
    assert (await server.client.head(f"/files/{ref}", headers=server.user())).status_code == 200
    stranger = server.user("app1", "other")
    assert (await server.client.head(f"/files/{ref}", headers=stranger)).status_code == 404

    # Retention: deleting the thread deletes its no longer referenced output file.
    deleted = await server.client.delete(f"/threads/{thread['id']}", headers=server.user())
    assert deleted.status_code == 204
    assert (await server.client.head(f"/files/{ref}", headers=server.user())).status_code == 404
    assert await server.services.files.storage.size(ref) is None
