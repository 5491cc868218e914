"""File throughput: upload and download of a 1 GiB file through a real server.

Starts ``task-framework serve`` (uvicorn) on a free loopback port with a temporary data
directory and local storage, uploads a 1 GiB file with ``POST /files`` (multipart,
streamed) and downloads it with ``GET /files/{ref}``, sampling the server's RSS
(``/proc/<pid>/status``) during each. Run ``uv run python benchmarks/files.py``; add
``--write docs/benchmarks.md`` to record the figures in its "## Files" section.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

MiB = 1024 * 1024
FILE_BYTES = 1024 * MiB
CHUNK_BYTES = 1 * MiB
RSS_SAMPLE_SECONDS = 0.01
STARTUP_TIMEOUT_SECONDS = 60
API_KEY = "tfk_bench_user"
ADMIN_KEY = "tfk_bench_admin"
BOUNDARY = "tfbenchboundary7d1c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


class RssSampler:
    """Peak RSS of a process while the block runs."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline = rss_bytes(pid)
        self.peak = self.baseline
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes(self.pid))
            time.sleep(RSS_SAMPLE_SECONDS)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes(self.pid))

    @property
    def growth(self) -> int:
        return self.peak - self.baseline


def make_file(path: Path, size: int) -> str:
    digest = hashlib.sha256()
    seed = os.urandom(CHUNK_BYTES)
    with path.open("wb") as handle:
        for index in range(0, size, CHUNK_BYTES):
            block = index.to_bytes(8, "big") + seed[8:]
            digest.update(block)
            handle.write(block)
    return digest.hexdigest()


def multipart_body(path: Path) -> Iterator[bytes]:
    yield (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="{path.name}"\r\nContent-Type: application/octet-stream\r\n\r\n'
    ).encode()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            yield block
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def start_server(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "TASK_FRAMEWORK_API_KEYS": API_KEY,
        "TASK_FRAMEWORK_ADMIN_API_KEYS": ADMIN_KEY,
        "TASK_FRAMEWORK_LOG_LEVEL": "WARNING",
        "TASK_FRAMEWORK_WORKER_CONCURRENCY": "1",
        "TASK_FRAMEWORK_MAX_UPLOAD_BYTES": str(2 * FILE_BYTES),
    }
    command = [sys.executable, "-m", "task_framework", "serve", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--data-dir", str(data_dir)]
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL)
    deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start")


def run(data_root: Path | None) -> dict[str, float]:
    with (
        tempfile.TemporaryDirectory() as tmp,
        tempfile.TemporaryDirectory(dir=data_root) as data_tmp,
    ):
        root = Path(tmp)
        source = root / "source.bin"
        expected = make_file(source, FILE_BYTES)
        port = free_port()
        server = start_server(Path(data_tmp) / "data", port)
        headers = {"X-API-Key": API_KEY, "X-App-Id": "bench", "X-User-Id": "bench"}
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
                with RssSampler(server.pid) as up_rss:
                    started = time.perf_counter()
                    answer = client.post(
                        "/files",
                        content=multipart_body(source),
                        headers={
                            **headers,
                            "Content-Type": f"multipart/form-data; boundary={BOUNDARY}",
                        },
                    )
                    upload_s = time.perf_counter() - started
                answer.raise_for_status()
                stored = answer.json()
                assert stored["sha256"] == expected, "upload hash mismatch"
                with RssSampler(server.pid) as down_rss:
                    started = time.perf_counter()
                    received = 0
                    with client.stream(
                        "GET", f"/files/{stored['file_ref']}", headers=headers
                    ) as got:
                        got.raise_for_status()
                        for chunk in got.iter_raw(CHUNK_BYTES):
                            received += len(chunk)
                    download_s = time.perf_counter() - started
                assert received == FILE_BYTES, "short download"
        finally:
            server.terminate()
            server.wait(30)
    return {
        "upload_mb_s": FILE_BYTES / MiB / upload_s,
        "download_mb_s": FILE_BYTES / MiB / download_s,
        "upload_rss_mib": up_rss.growth / MiB,
        "download_rss_mib": down_rss.growth / MiB,
    }


def _rows(label: str, figures: dict[str, float]) -> list[str]:
    return [
        f"| Upload (`POST /files`, multipart), {label} | {figures['upload_mb_s']:.0f} MiB/s | "
        f"{figures['upload_rss_mib']:.1f} MiB |",
        f"| Download (`GET /files/{{ref}}`), {label} | {figures['download_mb_s']:.0f} MiB/s | "
        f"{figures['download_rss_mib']:.1f} MiB |",
    ]


def report(results: dict[str, dict[str, float]]) -> str:
    rows = [row for label, figures in results.items() for row in _rows(label, figures)]
    return "\n".join(
        [
            f"Measured by `benchmarks/files.py`. {machine_summary()}",
            "",
            "| 1 GiB file, local storage | Throughput | Peak server RSS growth |",
            "|---|---|---|",
            *rows,
            "",
            "Targets: ≥ 200 MB/s each way, RSS growth ≤ 64 MiB. The disk row stores into a "
            "temporary directory on the machine's disk; the tmpfs row stores into `/dev/shm`, "
            "which separates the server's own cost from the disk's write speed.",
            "",
            "A real `task-framework serve` (uvicorn, uvloop) on loopback with a temporary data "
            "directory; the client (httpx, same machine) streams the file in 1 MiB pieces. "
            "Upload time includes hashing (sha256) and the atomic rename; RSS is sampled from "
            "`/proc/<pid>/status` every 10 ms and compared with its value just before each "
            "transfer.",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="record the figures in this markdown file")
    args = parser.parse_args()
    results = {"disk": run(None)}
    shm = Path("/dev/shm")
    if shm.is_dir():
        results["tmpfs"] = run(shm)
    text = report(results)
    print(text)
    if args.write:
        replace_section(args.write, "Files", text)


if __name__ == "__main__":
    main()
