"""What both clients share: connection settings, progress reporting, file helpers."""

from __future__ import annotations

import contextlib
import io
import mimetypes
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import unquote

from task_framework._version import __version__

DEFAULT_URL = "http://127.0.0.1:3000"
DEFAULT_TIMEOUT_SECONDS = 60.0
WAIT_POLL_SECONDS = 0.5
DOWNLOAD_CHUNK_BYTES = 256 * 1024
URL_ENV = "TASK_FRAMEWORK_URL"
API_KEY_ENV = "TASK_FRAMEWORK_API_KEY"
APP_ID_ENV = "TASK_FRAMEWORK_APP_ID"
USER_ID_ENV = "TASK_FRAMEWORK_USER_ID"

ProgressCallback = Callable[[int, int | None], None]
"""Called as ``progress(bytes_done, bytes_total_or_None)`` while data moves."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Where the server is and who is calling."""

    base_url: str
    api_key: str | None
    app_id: str | None
    user_id: str | None

    @classmethod
    def resolve(
        cls,
        base_url: str | None,
        api_key: str | None,
        *,
        app_id: str | None,
        user_id: str | None,
    ) -> Settings:
        """Explicit values first, then the ``TASK_FRAMEWORK_*`` environment variables."""
        return cls(
            base_url=(base_url or os.environ.get(URL_ENV) or DEFAULT_URL).rstrip("/"),
            api_key=api_key or os.environ.get(API_KEY_ENV) or None,
            app_id=app_id or os.environ.get(APP_ID_ENV) or None,
            user_id=user_id or os.environ.get(USER_ID_ENV) or None,
        )

    def headers(self) -> dict[str, str]:
        headers = {"User-Agent": f"task-framework-client/{__version__}"}
        if self.api_key:
            headers["X-API-Key"] = self.api_key
        if self.app_id:
            headers["X-App-Id"] = self.app_id
        if self.user_id:
            headers["X-User-Id"] = self.user_id
        return headers


class _CountingReader(io.RawIOBase):
    """A read-only view of a binary file that reports progress as it is read."""

    def __init__(self, inner: IO[bytes], total: int | None, progress: ProgressCallback) -> None:
        self._inner = inner
        self._total = total
        self._progress = progress
        self._done = 0

    def readable(self) -> bool:
        return True

    def read(self, size: int = -1) -> bytes:
        data = self._inner.read(size)
        self._done += len(data)
        self._progress(self._done, self._total)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def counting_reader(
    handle: IO[bytes], total: int | None, progress: ProgressCallback | None
) -> IO[bytes]:
    """``handle`` itself, or a wrapper reporting progress when a callback is given."""
    if progress is None:
        return handle
    return _CountingReader(handle, total, progress)  # type: ignore[return-value]


def upload_source(
    source: str | Path | bytes | IO[bytes], filename: str | None
) -> tuple[IO[bytes], str, int | None, bool]:
    """(file object, filename, size if known, whether we opened it and must close it)."""
    if isinstance(source, bytes):
        return io.BytesIO(source), filename or "upload.bin", len(source), True
    if isinstance(source, str | Path):
        path = Path(source)
        return path.open("rb"), filename or path.name, path.stat().st_size, True
    size = None
    with contextlib.suppress(OSError, AttributeError, io.UnsupportedOperation):
        size = os.fstat(source.fileno()).st_size
    name = filename or Path(str(getattr(source, "name", "upload.bin"))).name
    return source, name, size, False


def guess_media_type(name: str) -> str | None:
    return mimetypes.guess_type(name)[0]


_FILENAME_STAR = re.compile(r"filename\*=UTF-8''([^;]+)", re.IGNORECASE)
_FILENAME = re.compile(r'filename="([^"]+)"', re.IGNORECASE)


def disposition_filename(header: str | None) -> str | None:
    """The filename of a ``Content-Disposition`` header, reduced to a safe base name."""
    if not header:
        return None
    found = _FILENAME_STAR.search(header)
    name = unquote(found.group(1)) if found else None
    if name is None:
        plain = _FILENAME.search(header)
        name = plain.group(1) if plain else None
    if not name:
        return None
    safe = Path(name.replace("\\", "/")).name
    return safe if safe not in ("", ".", "..") else None


def target_path(dest: Path, disposition: str | None, fallback: str) -> Path:
    """``dest`` itself, or ``dest/<server filename>`` when ``dest`` is a folder."""
    if dest.is_dir():
        return dest / (disposition_filename(disposition) or fallback)
    return dest
