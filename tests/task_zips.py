"""Build task package zips (valid and hostile) in memory for tests."""

from __future__ import annotations

import io
import json
import stat
import zipfile
from collections.abc import Mapping
from typing import Any

PUBLISH_TASK = """\
from task_framework.models.artifact import Artifact


async def run(context):
    inputs = await context.get_input_artifacts()
    await context.publish_output_artifacts(
        [Artifact(kind="json", ref="result", value={"marker": MARKER, "inputs": len(inputs)})]
    )
"""


def metadata(name: str = "greet", version: str = "1.0.0", **extra: Any) -> str:
    return json.dumps({"name": name, "version": version, "entry_point": "task:run", **extra})


def task_files(
    name: str = "greet", version: str = "1.0.0", *, marker: str = "v1", **extra_files: str
) -> dict[str, str]:
    """A minimal valid package: metadata plus a task publishing ``{"marker": marker}``."""
    return {
        "task_metadata.json": metadata(name, version),
        "task.py": f"MARKER = {marker!r}\n" + PUBLISH_TASK,
        **extra_files,
    }


def build_zip(files: Mapping[str, str | bytes], *, prefix: str = "") -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(prefix + name, content)
    return buffer.getvalue()


def with_entry(files: dict[str, str], info: zipfile.ZipInfo, data: bytes) -> bytes:
    """A valid package plus one hand-made entry (symlinks, odd names...)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in files.items():
            archive.writestr(name, content)
        archive.writestr(info, data)
    return buffer.getvalue()


def symlink_entry(name: str, target: str) -> tuple[zipfile.ZipInfo, bytes]:
    info = zipfile.ZipInfo(name)
    info.create_system = 3
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info, target.encode()


def bomb_zip(uncompressed_bytes: int, *, chunk: int = 4 * 1024 * 1024) -> bytes:
    """A valid package plus ``bomb.bin``: that many zero bytes, streamed into the zip."""
    buffer = io.BytesIO()
    zeros = bytes(chunk)
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as archive:
        for name, content in task_files().items():
            archive.writestr(name, content)
        with archive.open("bomb.bin", "w") as out:
            remaining = uncompressed_bytes
            while remaining > 0:
                out.write(zeros[: min(chunk, remaining)])
                remaining -= chunk
    return buffer.getvalue()


def many_members_zip(count: int) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in task_files().items():
            archive.writestr(name, content)
        for index in range(count):
            archive.writestr(f"f/{index}", b"")
    return buffer.getvalue()


def corrupt_crc_zip() -> bytes:
    """A stored (uncompressed) task.py with one byte flipped: the CRC no longer matches."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, content in task_files(marker="CORRUPTME").items():
            archive.writestr(name, content)
    data = bytearray(buffer.getvalue())
    at = data.index(b"CORRUPTME")
    data[at] ^= 0x20
    return bytes(data)
