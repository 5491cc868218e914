"""Task package validation and safe extraction (API.md §14.1).

A package is untrusted input. Before a byte is written, every member name, type and
declared size is checked; then each file is streamed out with its produced bytes counted
(the limits hold even if a header lies), into a fresh directory that is renamed to its
content-addressed home only when everything passed. A rejected package leaves nothing.
This module does no database or network I/O.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any

from task_framework.errors import InvalidTaskPackage
from task_framework.services.tasks import entry_module_exists, parse_metadata

MiB = 1024 * 1024
METADATA_FILE = "task_metadata.json"
RATIO_MIN_ENTRY_BYTES = 1 * MiB
"""Entries up to this size are exempt from the compression ratio limit."""
COPY_CHUNK_BYTES = 64 * 1024
HASH_PREFIX = "sha256:"
_MACOS_JUNK = "__MACOSX"
_ALLOWED_METHODS = {
    zipfile.ZIP_STORED,
    zipfile.ZIP_DEFLATED,
    zipfile.ZIP_BZIP2,
    zipfile.ZIP_LZMA,
}
_LOCAL_HEADER_BYTES = 30
_CENTRAL_HEADER = struct.Struct("<4s6H3L5H2L")
_CENTRAL_SIG = b"PK\x01\x02"
_EOCD = struct.Struct("<4s4H2LH")
_EOCD_SIG = b"PK\x05\x06"
_ZIP64_LOCATOR = struct.Struct("<4sLQL")
_ZIP64_LOCATOR_SIG = b"PK\x06\x07"
_ZIP64_EOCD = struct.Struct("<4sQ2H2L4Q")
_MAX_COMMENT_BYTES = 65535


@dataclass(frozen=True, slots=True)
class PackageLimits:
    """What a package may contain (API.md §16.2 ``TASK_FRAMEWORK_MAX_PACKAGE_*``)."""

    max_uncompressed_bytes: int = 500 * MiB
    max_entries: int = 10_000
    max_ratio: int = 200


@dataclass(frozen=True, slots=True)
class ExtractedPackage:
    """A validated package, extracted under ``root`` (``<tasks_dir>/<hex of zip_hash>``)."""

    root: Path
    zip_hash: str
    """``sha256:<hex>`` over the sorted (path, bytes) pairs after root stripping."""
    metadata: dict[str, Any]
    """``parse_metadata`` output (task_id, version, entry_point, schemas...)."""
    raw_metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Member:
    info: zipfile.ZipInfo
    path: str
    """Name inside the package after root stripping."""


def hash_hex(zip_hash: str) -> str:
    return zip_hash.removeprefix(HASH_PREFIX)


def extract_package(
    zip_path: Path, *, tmp_dir: Path, tasks_dir: Path, limits: PackageLimits
) -> ExtractedPackage:
    """Validate ``zip_path`` and extract it to ``tasks_dir/<hash>`` (reused when present).

    Raises ``InvalidTaskPackage`` naming the offending entry; nothing is left behind then.
    """
    tmp_dir.mkdir(parents=True, exist_ok=True)
    tasks_dir.mkdir(parents=True, exist_ok=True)
    with open(zip_path, "rb") as handle:
        _check_entry_count(handle, limits.max_entries)
        try:
            archive = zipfile.ZipFile(handle)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, EOFError) as exc:
            raise InvalidTaskPackage(f"File is not a valid zip archive: {exc}") from exc
        with archive:
            members = _check_members(archive, limits)
            staging = Path(tempfile.mkdtemp(prefix="package-", dir=tmp_dir))
            try:
                zip_hash = _extract(archive, members, staging, limits)
                meta, raw = _check_contents(staging)
                final = tasks_dir / hash_hex(zip_hash)
                _publish(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
    return ExtractedPackage(root=final, zip_hash=zip_hash, metadata=meta, raw_metadata=raw)


def read_metadata_only(zip_path: Path, *, limits: PackageLimits) -> dict[str, Any]:
    """Validate a package fully in a scratch directory and return its parsed metadata."""
    with tempfile.TemporaryDirectory(prefix="tf-validate-") as scratch:
        base = Path(scratch)
        package = extract_package(
            zip_path, tmp_dir=base / "tmp", tasks_dir=base / "tasks", limits=limits
        )
        return {**package.metadata, "zip_hash": package.zip_hash}


# -- structure ------------------------------------------------------------------------


def _check_entry_count(handle: IO[bytes], max_entries: int) -> None:
    """Count central directory records without building ZipInfo objects.

    ``zipfile`` would materialise every record first; a 100 MiB upload can declare
    millions, so the count is checked on the raw directory and stops past the limit.
    """
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    tail_len = min(size, _EOCD.size + _MAX_COMMENT_BYTES)
    handle.seek(size - tail_len)
    tail = handle.read(tail_len)
    at = tail.rfind(_EOCD_SIG)
    if at < 0 or at + _EOCD.size > len(tail):
        raise InvalidTaskPackage("File is not a valid zip archive: no end of central directory")
    eocd = _EOCD.unpack_from(tail, at)
    declared, cd_size, cd_offset = eocd[4], eocd[5], eocd[6]
    eocd_pos = size - tail_len + at
    if declared == 0xFFFF or cd_offset == 0xFFFFFFFF:
        locator_pos = eocd_pos - _ZIP64_LOCATOR.size
        if locator_pos >= 0:
            handle.seek(locator_pos)
            locator = _ZIP64_LOCATOR.unpack(handle.read(_ZIP64_LOCATOR.size))
            if locator[0] == _ZIP64_LOCATOR_SIG:
                handle.seek(locator[2])
                record = handle.read(_ZIP64_EOCD.size)
                if len(record) == _ZIP64_EOCD.size:
                    zip64 = _ZIP64_EOCD.unpack(record)
                    declared, cd_size, cd_offset = zip64[6], zip64[7], zip64[8]
    if declared > max_entries:
        raise InvalidTaskPackage(
            f"Package has {declared} entries, more than the limit of {max_entries}"
        )
    # The declared count may lie: walk the records themselves, stopping past the limit.
    handle.seek(cd_offset)
    count = 0
    consumed = 0
    while consumed + _CENTRAL_HEADER.size <= cd_size:
        header = handle.read(_CENTRAL_HEADER.size)
        if len(header) < _CENTRAL_HEADER.size or header[:4] != _CENTRAL_SIG:
            return  # not where the EOCD says (prepended data): zipfile copes or rejects
        fields = _CENTRAL_HEADER.unpack(header)
        skip = fields[12] + fields[13] + fields[14]
        handle.seek(skip, os.SEEK_CUR)
        consumed += _CENTRAL_HEADER.size + skip
        count += 1
        if count > max_entries:
            raise InvalidTaskPackage(f"Package has more than {max_entries} entries, the limit")


def _check_name(name: str) -> None:
    if "\x00" in name:
        raise InvalidTaskPackage(f"Entry {name!r} has a NUL character in its name")
    if "\\" in name:
        raise InvalidTaskPackage(f"Entry '{name}' uses a backslash in its path")
    if name.startswith("/"):
        raise InvalidTaskPackage(f"Entry '{name}' has an absolute path")
    if len(name) >= 2 and name[1] == ":" and name[0].isalpha():
        raise InvalidTaskPackage(f"Entry '{name}' has a drive letter in its path")
    parts = name.rstrip("/").split("/")
    if ".." in parts:
        raise InvalidTaskPackage(f"Entry '{name}' has a '..' component in its path")
    if any(part in ("", ".") for part in parts):
        raise InvalidTaskPackage(f"Entry '{name}' has an empty or '.' component in its path")


def _check_members(archive: zipfile.ZipFile, limits: PackageLimits) -> list[_Member]:
    infos = archive.infolist()
    if len(infos) > limits.max_entries:
        raise InvalidTaskPackage(
            f"Package has {len(infos)} entries, more than the limit of {limits.max_entries}"
        )
    seen: set[str] = set()
    files: list[zipfile.ZipInfo] = []
    declared_total = 0
    for info in infos:
        name = info.orig_filename
        _check_name(name)
        key = name.rstrip("/")
        if key in seen:
            raise InvalidTaskPackage(f"Entry '{name}' appears more than once")
        seen.add(key)
        mode = info.external_attr >> 16
        kind = stat.S_IFMT(mode)
        if kind == stat.S_IFLNK:
            raise InvalidTaskPackage(f"Entry '{name}' is a symbolic link")
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise InvalidTaskPackage(f"Entry '{name}' is a special file")
        if info.flag_bits & 0x1:
            raise InvalidTaskPackage(f"Entry '{name}' is encrypted")
        if info.is_dir() or key.split("/")[0] == _MACOS_JUNK:
            continue
        if info.compress_type not in _ALLOWED_METHODS:
            raise InvalidTaskPackage(
                f"Entry '{name}' uses an unsupported compression method ({info.compress_type})"
            )
        # Header sizes are only a first filter; extraction counts the real bytes.
        _check_ratio(name, info.file_size, info.compress_size, limits)
        declared_total += info.file_size
        if declared_total > limits.max_uncompressed_bytes:
            raise _too_big(name, limits)
        files.append(info)
    _check_file_dir_clash(files)
    _check_overlaps(archive, files)
    return _strip_root(files)


def _check_file_dir_clash(files: list[zipfile.ZipInfo]) -> None:
    file_names = {info.orig_filename for info in files}
    for info in files:
        parts = info.orig_filename.split("/")
        for depth in range(1, len(parts)):
            prefix = "/".join(parts[:depth])
            if prefix in file_names:
                raise InvalidTaskPackage(
                    f"Entry '{info.orig_filename}' is inside '{prefix}', which is a file"
                )


def _check_overlaps(archive: zipfile.ZipFile, files: list[zipfile.ZipInfo]) -> None:
    """Refuse entries whose data overlap (the trick behind non-recursive zip bombs)."""
    if not files:
        raise InvalidTaskPackage("The package contains no files")
    ordered = sorted(files, key=lambda i: i.header_offset)
    directory_start = getattr(archive, "start_dir", None)
    for current, following in zip(ordered, [*ordered[1:], None], strict=True):
        end = current.header_offset + _LOCAL_HEADER_BYTES + current.compress_size
        limit = following.header_offset if following is not None else directory_start
        if limit is not None and end > limit:
            raise InvalidTaskPackage(
                f"Entry '{current.orig_filename}' overlaps another entry's data"
            )


def _strip_root(files: list[zipfile.ZipInfo]) -> list[_Member]:
    names = [info.orig_filename for info in files]
    if METADATA_FILE in names:
        return [_Member(info, info.orig_filename) for info in files]
    tops = {name.split("/", 1)[0] for name in names}
    if len(tops) == 1 and all("/" in name for name in names):
        top = tops.pop()
        if f"{top}/{METADATA_FILE}" in names:
            cut = len(top) + 1
            return [_Member(info, info.orig_filename[cut:]) for info in files]
    raise InvalidTaskPackage(
        f"{METADATA_FILE} not found at the package root or under a single top-level folder"
    )


# -- extraction -----------------------------------------------------------------------


def _extract(
    archive: zipfile.ZipFile, members: list[_Member], staging: Path, limits: PackageLimits
) -> str:
    """Write every file under ``staging`` in path order; return the content hash."""
    digest = hashlib.sha256()
    total = 0
    for member in sorted(members, key=lambda m: m.path):
        target = staging.joinpath(*PurePosixPath(member.path).parts)
        if staging not in target.parents:  # names were checked; this is a second lock
            raise InvalidTaskPackage(f"Entry '{member.info.orig_filename}' escapes the package")
        target.parent.mkdir(parents=True, exist_ok=True)
        file_digest = hashlib.sha256()
        written = 0
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
        fd = os.open(target, flags, 0o644)
        try:
            with os.fdopen(fd, "wb") as out, archive.open(member.info) as source:
                while chunk := source.read(COPY_CHUNK_BYTES):
                    written += len(chunk)
                    total += len(chunk)
                    if total > limits.max_uncompressed_bytes:
                        raise _too_big(member.info.orig_filename, limits)
                    _check_ratio(
                        member.info.orig_filename, written, member.info.compress_size, limits
                    )
                    file_digest.update(chunk)
                    out.write(chunk)
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as exc:
            raise InvalidTaskPackage(
                f"Entry '{member.info.orig_filename}' is corrupt: {exc}"
            ) from exc
        except RuntimeError as exc:  # encrypted data zipfile only notices when reading
            raise InvalidTaskPackage(
                f"Entry '{member.info.orig_filename}' cannot be read: {exc}"
            ) from exc
        path_bytes = member.path.encode("utf-8")
        digest.update(struct.pack("<I", len(path_bytes)) + path_bytes)
        digest.update(file_digest.digest())
    return HASH_PREFIX + digest.hexdigest()


def _check_ratio(name: str, size: int, compressed: int, limits: PackageLimits) -> None:
    if size > RATIO_MIN_ENTRY_BYTES and size > limits.max_ratio * max(compressed, 1):
        ratio = size // max(compressed, 1)
        raise InvalidTaskPackage(
            f"Entry '{name}' has a compression ratio of {ratio}:1, "
            f"over the limit of {limits.max_ratio}:1"
        )


def _too_big(name: str, limits: PackageLimits) -> InvalidTaskPackage:
    return InvalidTaskPackage(
        f"Package exceeds the uncompressed size limit of {limits.max_uncompressed_bytes} "
        f"bytes (at entry '{name}')"
    )


def _check_contents(root: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    path = root / METADATA_FILE
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidTaskPackage(f"{METADATA_FILE} is not valid JSON: {exc}") from exc
    except RecursionError:
        raise InvalidTaskPackage(f"{METADATA_FILE} is nested too deeply") from None
    meta = parse_metadata(raw)
    if not entry_module_exists(root, meta["entry_point"]):
        module = meta["entry_point"].split(":", 1)[0]
        file = module.replace(".", "/")
        raise InvalidTaskPackage(
            f"Entry module '{module}' of entry_point '{meta['entry_point']}' not found "
            f"in the package (expected {file}.py or {file}/__init__.py)"
        )
    return meta, raw


def _publish(staging: Path, final: Path) -> None:
    """Rename into place; content-addressed, so an existing directory is the same content."""
    if final.is_dir():
        shutil.rmtree(staging, ignore_errors=True)
        return
    # mkdtemp made it 0700: the task's own (unprivileged) worker user must read it. The
    # data directory around it stays private; the sandbox shows workers only their own code.
    os.chmod(staging, 0o755)  # noqa: S103
    try:
        os.rename(staging, final)
    except OSError:
        if not final.is_dir():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def remove_tree(path: Path) -> None:
    """Delete an extracted package: moved aside first so it never appears half-deleted."""
    doomed = path.with_name(f".removed-{path.name}-{os.getpid()}")
    with contextlib.suppress(FileNotFoundError):
        os.rename(path, doomed)
        shutil.rmtree(doomed, ignore_errors=True)
