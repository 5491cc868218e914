"""The task SDK overlay: a copy of only the task-author modules of ``task_framework``.

Workers put the overlay directory on ``sys.path`` ahead of the task's own environment,
so task code can import ``task_framework.context``, ``task_framework.models.artifact``
and friends without the server's dependencies (FastAPI, SQLAlchemy...) being installed
there. The copy is content-addressed: a server upgrade gets a fresh directory, and
workers of the same server version share one.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
from pathlib import Path

import task_framework
from task_framework import _version

SDK_MODULES: tuple[str, ...] = (
    "__init__.py",
    "_version.py",
    "errors.py",
    "context.py",
    "logging.py",
    "testing.py",
    "models/__init__.py",
    "models/artifact.py",
    "models/_time.py",
    "utils/__init__.py",
    "utils/artifact_validation.py",
    "utils/schema_matching.py",
    "runner/__init__.py",
    "runner/base.py",
    "runner/protocol.py",
    "runner/child.py",
)
"""Paths inside the ``task_framework`` package that make up the task SDK."""

PACKAGE = "task_framework"


def sdk_dir(root: Path) -> Path:
    """Copy the SDK modules under ``root/sdk/<hash>`` once; return that sys.path entry."""
    files = _sdk_files()
    digest = hashlib.sha256()
    for rel, data in files.items():
        digest.update(f"{rel}\0{len(data)}\0".encode())
        digest.update(data)
    parent = root / "sdk"
    final = parent / digest.hexdigest()
    if final.is_dir():
        return final
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{final.name}-{secrets.token_hex(4)}"
    tmp.mkdir()
    try:
        for rel, data in files.items():
            target = tmp / PACKAGE / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        try:
            os.rename(tmp, final)
        except OSError:
            # Another process renamed its identical copy into place first.
            if not final.is_dir():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def _sdk_files() -> dict[str, bytes]:
    """The overlay's files by package-relative path; ``_version.py`` carries the real version.

    The original ``_version.py`` asks importlib.metadata, which finds no installed
    distribution inside a task environment, so the copy states the version outright.
    """
    package_dir = Path(task_framework.__file__).parent
    files: dict[str, bytes] = {}
    for rel in SDK_MODULES:
        path = package_dir / rel
        if rel == "_version.py":
            files[rel] = _version_module().encode()
        elif path.is_file():
            files[rel] = path.read_bytes()
    return files


def _version_module() -> str:
    return (
        '"""The task-framework version this SDK overlay was copied from (generated)."""\n'
        "\n"
        f"__version__ = {_version.__version__!r}\n"
        "\n"
        f"SDK_PROTOCOL_VERSION = {_version.SDK_PROTOCOL_VERSION!r}\n"
    )
