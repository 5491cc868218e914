"""The task packager (API.md §14.5): build or validate a task package zip.

``task-framework package DIR -o OUT.zip`` or ``python -m task_framework.cli.package
-t DIR -o OUT.zip``. The result is checked with the same rules the server applies.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import tomllib
import zipfile
from fnmatch import fnmatch
from pathlib import Path
from typing import Any

from task_framework._version import __version__
from task_framework.errors import InvalidTaskPackage
from task_framework.services.packages import METADATA_FILE, PackageLimits, read_metadata_only

EXCLUDED_COMPONENTS = (
    "__pycache__",
    ".git",
    ".venv",
    "venv",
    ".idea",
    ".vscode",
    ".pytest_cache",
    ".mypy_cache",
    ".ruff_cache",
    "htmlcov",
    "dist",
    "build",
    "test-data",
    "*.egg-info",
)
EXCLUDED_FILES = ("*.pyc", "*.pyo", ".coverage", ".env")
PYPROJECT = "pyproject.toml"


class PackagingError(Exception):
    """The folder cannot be packaged; the message says why."""


def _excluded(relative: Path) -> bool:
    *folders, name = relative.parts
    if any(fnmatch(part, pattern) for part in folders for pattern in EXCLUDED_COMPONENTS):
        return True
    return any(fnmatch(name, pattern) for pattern in EXCLUDED_FILES)


def collect_files(task_dir: Path) -> list[Path]:
    """Files to package, relative to ``task_dir``, sorted; symlinks are refused."""
    found: list[Path] = []
    for root, dirs, files in os.walk(task_dir):
        base = Path(root)
        dirs[:] = sorted(
            d for d in dirs if not any(fnmatch(d, pattern) for pattern in EXCLUDED_COMPONENTS)
        )
        for name in sorted(files):
            path = base / name
            relative = path.relative_to(task_dir)
            if _excluded(relative):
                continue
            if path.is_symlink():
                raise PackagingError(f"{relative} is a symbolic link; packages cannot hold links")
            found.append(relative)
    return found


def _metadata_bytes(task_dir: Path) -> bytes:
    path = task_dir / METADATA_FILE
    if not path.is_file():
        raise PackagingError(f"{task_dir} has no {METADATA_FILE}")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise PackagingError(f"{METADATA_FILE} is not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise PackagingError(f"{METADATA_FILE} must contain a JSON object")
    raw["sdk_version"] = __version__
    return (json.dumps(raw, indent=2) + "\n").encode()


def strip_uv_sources(text: str) -> str:
    """``pyproject.toml`` without its ``[tool.uv.sources]`` table (local paths break installs)."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PackagingError(f"{PYPROJECT} is not valid TOML: {exc}") from exc
    if "sources" not in data.get("tool", {}).get("uv", {}):
        return text
    kept: list[str] = []
    skipping = False
    for line in text.splitlines(keepends=True):
        header = line.strip()
        if header.startswith("["):
            name = header.strip("[] \t")
            skipping = name == "tool.uv.sources" or name.startswith("tool.uv.sources.")
        if not skipping:
            kept.append(line)
    result = "".join(kept)
    try:
        if "sources" in tomllib.loads(result).get("tool", {}).get("uv", {}):
            raise PackagingError(
                f"{PYPROJECT}: cannot remove the inline tool.uv.sources; move it to its own table"
            )
    except tomllib.TOMLDecodeError as exc:
        raise PackagingError(f"{PYPROJECT}: removing [tool.uv.sources] failed: {exc}") from exc
    return result


def build_package(task_dir: Path, output: Path) -> Path:
    """Write the package of ``task_dir`` to ``output`` (``.zip`` appended when missing)."""
    task_dir = task_dir.resolve()
    if not task_dir.is_dir():
        raise PackagingError(f"{task_dir} is not a directory")
    if output.suffix.lower() != ".zip":
        output = output.with_name(output.name + ".zip")
    output = output.resolve()
    files = [f for f in collect_files(task_dir) if task_dir / f != output]
    metadata = _metadata_bytes(task_dir)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=".package-", suffix=".zip", dir=output.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as archive:
            for relative in files:
                name = relative.as_posix()
                source = task_dir / relative
                if name == METADATA_FILE:
                    archive.writestr(name, metadata)
                elif name == PYPROJECT:
                    archive.writestr(name, strip_uv_sources(source.read_text(encoding="utf-8")))
                else:
                    archive.write(source, name)
        read_metadata_only(tmp, limits=PackageLimits())
        os.replace(tmp, output)
    except InvalidTaskPackage as exc:
        raise PackagingError(exc.message) from exc
    finally:
        tmp.unlink(missing_ok=True)
    return output


def validate(task_dir: Path) -> dict[str, Any]:
    """Build the package in a scratch folder and return its metadata (nothing kept)."""
    with tempfile.TemporaryDirectory(prefix="tf-package-") as scratch:
        built = build_package(task_dir, Path(scratch) / "check.zip")
        return read_metadata_only(built, limits=PackageLimits())


def run(task_dir: Path, output: Path | None, *, validate_only: bool, show_metadata: bool) -> int:
    """The command body shared by both entry points; returns the exit code."""
    try:
        if validate_only or output is None:
            if output is None and not validate_only:
                raise PackagingError("an output file is required (-o OUT.zip)")
            meta = validate(task_dir)
            print(f"valid package: {meta['task_id']}:{meta['version']}", file=sys.stderr)
        else:
            built = build_package(task_dir, output)
            meta = read_metadata_only(built, limits=PackageLimits())
            size = built.stat().st_size
            print(
                f"built {built} ({size} bytes): {meta['task_id']}:{meta['version']}",
                file=sys.stderr,
            )
    except (PackagingError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if show_metadata:
        print(json.dumps(meta, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m task_framework.cli.package", description="Build a task package zip."
    )
    parser.add_argument("task_dir_arg", nargs="?", type=Path, help="task folder")
    parser.add_argument("-t", "--task-dir", type=Path, help="task folder")
    parser.add_argument("-o", "--output", type=Path, help="output zip")
    parser.add_argument("--validate-only", action="store_true")
    parser.add_argument("--show-metadata", action="store_true")
    parser.add_argument("-v", "--verbose", action="store_true")
    args = parser.parse_args(argv)
    task_dir = args.task_dir or args.task_dir_arg
    if task_dir is None:
        parser.error("a task folder is required (DIR or -t DIR)")
    return run(
        task_dir, args.output, validate_only=args.validate_only, show_metadata=args.show_metadata
    )


if __name__ == "__main__":
    sys.exit(main())
