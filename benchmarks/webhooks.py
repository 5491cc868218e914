"""Webhook dispatcher benchmark: deliveries per second and event-to-delivery lag.

An in-process app (SQLite, the real dispatcher) sends to a fast HTTP receiver running in
its own process on loopback. Events are written straight into the outbox (as the thread
services do), so the figures are those of the dispatcher, not of task execution.

* Throughput: 3,000 events written in batches of 200, to 1 and to 4 webhook URLs (the
  per-endpoint bound is 4 requests in flight per URL); deliveries/s from the first write to
  the last delivery.
* Lag: 500 events written one per transaction at ~100/s; receipt time minus the event's
  ``timestamp`` (p50/p99).

Run: ``uv run python benchmarks/webhooks.py [--write docs/benchmarks.md]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_summary, replace_section

from task_framework.app import Services, create_app
from task_framework.models._time import utcnow
from task_framework.services.events import insert_events, thread_event
from task_framework.settings import Settings

ADMIN_KEY = "tfk_bench_admin_" + uuid.uuid4().hex
THROUGHPUT_EVENTS = int(os.environ.get("WH_BENCH_EVENTS", "3000"))
WRITE_BATCH = 200
LAG_EVENTS = 500
LAG_INTERVAL_SECONDS = 0.01
WAIT_SECONDS = 120.0


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- the receiver (runs in its own process) -------------------------------------------------


async def _receiver(port: int) -> None:
    arrivals: list[tuple[float, str]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line[:15].lower() == b"content-length:":
                        length = int(line[15:])
                body = await reader.readexactly(length) if length else b""
                if head.startswith(b"GET /dump"):
                    out = json.dumps(arrivals).encode()
                    arrivals.clear()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
                elif head.startswith(b"GET /count"):
                    out = str(len(arrivals)).encode()
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(out) + out)
                else:
                    arrivals.append((time.time(), json.loads(body)["timestamp"]))
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", port, backlog=1024)
    async with server:
        await server.serve_forever()


# -- the benchmark --------------------------------------------------------------------------


def _event(n: int) -> dict[str, Any]:
    now = utcnow()
    thread = {
        "id": f"thread_{uuid.uuid4().hex}",
        "state": "succeeded",
        "created_at": now.isoformat(),
        "metadata": {"task_id": "bench", "n": n},
    }
    output = {"id": f"artifact_{uuid.uuid4().hex}", "kind": "json", "value": {"n": n}}
    return thread_event("thread.succeeded", thread, at=now, artifacts=[output], owner=(None, None))


async def _write(svc: Services, count: int) -> None:
    rows = [_event(i) for i in range(count)]
    await svc.db.tx(insert_events, rows)


async def _collect(rx: httpx.AsyncClient, expected: int) -> list[tuple[float, str]]:
    deadline = time.monotonic() + WAIT_SECONDS
    while int((await rx.get("/count")).text) < expected:
        if time.monotonic() > deadline:
            raise RuntimeError("deliveries did not arrive in time")
        await asyncio.sleep(0.01)
    arrivals: list[tuple[float, str]] = (await rx.get("/dump")).json()
    return arrivals


async def _hooks(client: httpx.AsyncClient, base: str, count: int) -> list[str]:
    ids = []
    for i in range(count):
        response = await client.post(
            "/webhooks", json={"url": f"{base}/hook{i}", "data_filters": {"detail": "inline_small"}}
        )
        response.raise_for_status()
        ids.append(response.json()["id"])
    return ids


async def _throughput(svc: Services, rx: httpx.AsyncClient, hooks: int) -> float:
    started = time.time()
    for _ in range(THROUGHPUT_EVENTS // WRITE_BATCH):
        await _write(svc, WRITE_BATCH)
    arrivals = await _collect(rx, THROUGHPUT_EVENTS * hooks)
    elapsed = max(a for a, _ in arrivals) - started
    return THROUGHPUT_EVENTS * hooks / elapsed


async def _lag(svc: Services, rx: httpx.AsyncClient) -> list[float]:
    for _ in range(LAG_EVENTS):
        await _write(svc, 1)
        await asyncio.sleep(LAG_INTERVAL_SECONDS)
    arrivals = await _collect(rx, LAG_EVENTS)
    return sorted(
        (at - datetime.strptime(ts, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()) * 1000
        for at, ts in arrivals
    )


async def run() -> dict[str, float]:
    port = _free_port()
    receiver = subprocess.Popen(
        [sys.executable, str(Path(__file__).resolve()), "--receiver", str(port)]
    )
    base = f"http://127.0.0.1:{port}"
    results: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(
            data_dir=Path(tmp),
            admin_api_keys=[ADMIN_KEY],
            dev_tasks=[],
            worker_concurrency=1,
            webhook_allow_private_networks=True,
        )
        app = create_app(settings)
        lifespan = app.router.lifespan_context(app)
        await lifespan.__aenter__()
        svc: Services = app.state.services
        api = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app),
            base_url="http://bench",
            headers={"X-API-Key": ADMIN_KEY},
        )
        rx = httpx.AsyncClient(base_url=base, timeout=10)
        try:
            for _ in range(600):
                try:
                    await rx.get("/count")
                    break
                except httpx.TransportError:
                    await asyncio.sleep(0.05)
            hook_ids = await _hooks(api, base, 1)
            await _write(svc, 50)  # warm-up
            await _collect(rx, 50)
            results["one_endpoint_per_s"] = await _throughput(svc, rx, 1)
            print(results, file=sys.stderr, flush=True)
            lags = await _lag(svc, rx)
            results["lag_p50_ms"] = lags[len(lags) // 2]
            results["lag_p99_ms"] = lags[int(len(lags) * 0.99) - 1]
            results["lag_mean_ms"] = statistics.fmean(lags)
            print(results, file=sys.stderr, flush=True)
            for hook_id in hook_ids:
                await api.delete(f"/webhooks/{hook_id}")
            await _hooks(api, base, 4)
            results["four_endpoints_per_s"] = await _throughput(svc, rx, 4)
        finally:
            await api.aclose()
            await rx.aclose()
            await lifespan.__aexit__(None, None, None)
            receiver.terminate()
            receiver.wait(10)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--write", type=Path, help="update the Webhooks section of this file")
    parser.add_argument("--receiver", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.receiver:
        asyncio.run(_receiver(args.receiver))
        return
    load = os.getloadavg()[0]
    results = asyncio.run(run())
    table = "\n".join(
        [
            "| Measurement | Result | Target |",
            "|---|---|---|",
            f"| Deliveries/s, one endpoint | {results['one_endpoint_per_s']:.0f} | ≥ 300 |",
            f"| Deliveries/s, four endpoints | {results['four_endpoints_per_s']:.0f} | |",
            f"| Event-to-delivery lag, p50 | {results['lag_p50_ms']:.1f} ms | ≤ 50 ms |",
            f"| Event-to-delivery lag, p99 | {results['lag_p99_ms']:.1f} ms | |",
        ]
    )
    body = (
        f"Measured by `benchmarks/webhooks.py`. {machine_summary()}\n\n{table}\n\n"
        "In-process app on SQLite with the real dispatcher (default settings: 20 sends in "
        "flight, 4 per endpoint); a fast HTTP receiver in its own process on loopback. "
        f"Throughput: {THROUGHPUT_EVENTS} `thread.succeeded` events written to the outbox in "
        f"batches of {WRITE_BATCH}, timed from the first write to the last receipt. Lag: "
        f"{LAG_EVENTS} events written one per transaction at ~100/s; receipt time minus the "
        "event timestamp. The machine is shared: its 1-minute load average was "
        f"{load:.1f} when the run started, so these are lower bounds."
    )
    print(body)
    if args.write:
        replace_section(args.write, "Webhooks", body)


if __name__ == "__main__":
    main()
