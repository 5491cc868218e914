"""Package validation and extraction (services/packages.py), without a server."""

from __future__ import annotations

import struct
import zipfile
from pathlib import Path

import pytest

from task_framework.errors import InvalidTaskPackage
from task_framework.services.packages import PackageLimits, extract_package
from task_zips import build_zip, symlink_entry, task_files, with_entry

LIMITS = PackageLimits()


def _extract(tmp_path: Path, data: bytes, limits: PackageLimits = LIMITS) -> Path:
    source = tmp_path / "upload.zip"
    source.write_bytes(data)
    package = extract_package(
        source,
        tmp_dir=tmp_path / "data" / "tmp",
        tasks_dir=tmp_path / "data" / "tasks",
        limits=limits,
    )
    return package.root


def _reject(tmp_path: Path, data: bytes, match: str, limits: PackageLimits = LIMITS) -> None:
    with pytest.raises(InvalidTaskPackage, match=match):
        _extract(tmp_path, data, limits)
    # Nothing half-extracted stays behind.
    for sub in ("tmp", "tasks"):
        folder = tmp_path / "data" / sub
        assert not folder.exists() or not any(folder.iterdir())


def test_root_or_single_top_folder_give_the_same_hash(tmp_path: Path) -> None:
    files = task_files(**{"lib/helper.py": "X = 1\n"})
    flat = extract_package
    first = tmp_path / "a.zip"
    first.write_bytes(build_zip(files))
    second = tmp_path / "b.zip"
    second.write_bytes(build_zip(files, prefix="greet-1.0.0/"))
    kwargs = {"tmp_dir": tmp_path / "tmp", "tasks_dir": tmp_path / "tasks", "limits": LIMITS}
    one, two = flat(first, **kwargs), flat(second, **kwargs)  # type: ignore[arg-type]
    assert one.zip_hash == two.zip_hash
    assert one.zip_hash.startswith("sha256:")
    assert one.root == two.root == tmp_path / "tasks" / one.zip_hash.removeprefix("sha256:")
    assert (one.root / "lib" / "helper.py").read_text() == "X = 1\n"
    assert one.metadata["task_id"] == "greet"
    changed = tmp_path / "c.zip"
    changed.write_bytes(build_zip(task_files(marker="v2")))
    assert flat(changed, **kwargs).zip_hash != one.zip_hash  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("name", "match"),
    [
        ("../../x.py", r"Entry '\.\./\.\./x\.py' has a '\.\.' component"),
        ("/etc/evil.py", r"Entry '/etc/evil\.py' has an absolute path"),
        ("C:/evil.py", r"Entry 'C:/evil\.py' has a drive letter"),
        ("a\\..\\evil.py", r"uses a backslash"),
        ("a//b.py", r"empty or '\.' component"),
    ],
)
def test_unsafe_member_names_are_rejected(tmp_path: Path, name: str, match: str) -> None:
    _reject(tmp_path, with_entry(task_files(), zipfile.ZipInfo(name), b"x"), match)


def test_nul_in_a_name_is_rejected(tmp_path: Path) -> None:
    # zipfile cuts names at NUL when writing, so patch the stored bytes afterwards.
    data = with_entry(task_files(), zipfile.ZipInfo("a/NULHERE.py"), b"x")
    _reject(tmp_path, data.replace(b"NULHERE", b"\x00ULHERE"), r"NUL character")


def test_symlink_duplicates_and_file_dir_clash(tmp_path: Path) -> None:
    info, data = symlink_entry("link.py", "/etc/passwd")
    _reject(tmp_path, with_entry(task_files(), info, data), r"Entry 'link\.py' is a symbolic link")
    fifo = zipfile.ZipInfo("pipe")
    fifo.external_attr = (0o010644) << 16
    _reject(tmp_path, with_entry(task_files(), fifo, b""), r"Entry 'pipe' is a special file")
    with pytest.warns(UserWarning, match="Duplicate name"):
        dup = with_entry(task_files(), zipfile.ZipInfo("task.py"), b"other")
    _reject(tmp_path, dup, r"Entry 'task\.py' appears more than once")
    clash = build_zip({**task_files(), "lib": "file", "lib/x.py": "X = 1"})
    _reject(tmp_path, clash, r"Entry 'lib/x\.py' is inside 'lib', which is a file")


def test_limits(tmp_path: Path) -> None:
    data = build_zip({**task_files(), **{f"m{i}.py": "" for i in range(10)}})
    _reject(tmp_path, data, r"more than the limit of 5", PackageLimits(max_entries=5))
    big = build_zip({**task_files(), "big.txt": "x" * 5000})
    _reject(
        tmp_path,
        big,
        r"uncompressed size limit of 4096 bytes \(at entry 'big\.txt'\)",
        PackageLimits(max_uncompressed_bytes=4096),
    )
    zeros = build_zip({**task_files(), "zeros.bin": bytes(3 * 1024 * 1024)})
    _reject(tmp_path, zeros, r"Entry 'zeros\.bin' has a compression ratio of \d+:1, over the limit")


def test_lying_size_header_is_caught_while_extracting(tmp_path: Path) -> None:
    """A header that under-declares an entry's size does not get it truncated silently."""
    data = bytearray(build_zip({**task_files(), "data.txt": "y" * 10_000}))
    # Rewrite data.txt's uncompressed size in its local and central headers to 10 bytes.
    headers = ((b"PK\x03\x04", 22, 26, 30), (b"PK\x01\x02", 24, 28, 46))
    for signature, size_at, name_len_at, name_at in headers:
        start = 0
        while (at := data.find(signature, start)) >= 0:
            (name_len,) = struct.unpack_from("<H", data, at + name_len_at)
            if data[at + name_at : at + name_at + name_len] == b"data.txt":
                struct.pack_into("<I", data, at + size_at, 10)
            start = at + 4
    _reject(tmp_path, bytes(data), r"Entry 'data\.txt' is corrupt")


def test_contents_errors(tmp_path: Path) -> None:
    _reject(tmp_path, b"not a zip at all", r"File is not a valid zip archive")
    _reject(tmp_path, build_zip({"task.py": ""}), r"task_metadata\.json not found")
    _reject(
        tmp_path,
        build_zip({"task_metadata.json": "{nope", "task.py": ""}),
        r"task_metadata\.json is not valid JSON",
    )
    files = task_files()
    files["task_metadata.json"] = '{"name": "../evil", "version": "1", "entry_point": "task:run"}'
    _reject(tmp_path, build_zip(files), r"task name '\.\./evil' is not a safe identifier")
    del files["task.py"]
    files["task_metadata.json"] = '{"name": "ok", "version": "1", "entry_point": "pkg.mod:run"}'
    _reject(
        tmp_path,
        build_zip(files),
        r"Entry module 'pkg\.mod' of entry_point 'pkg\.mod:run' not found in the package "
        r"\(expected pkg/mod\.py or pkg/mod/__init__\.py\)",
    )
