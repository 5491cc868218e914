"""The metrics catalogue: docs/reference/metrics.md, the one metrics module and a scrape."""

from __future__ import annotations

import re
from collections import Counter

import pytest

from conftest import REPO_ROOT, Server, ServerFactory
from task_framework.observability.metrics import Metrics
from task_framework.services.cluster_stats import refresh
from webhook_receiver import Receiver

pytestmark = pytest.mark.slow

DOC = REPO_ROOT / "docs" / "reference" / "metrics.md"
# Families whose series appear only once something records into them with labels.
LABELLED_BY_WORKLOAD = {
    "task_framework_env_builds_total",  # needs a package deployment (covered elsewhere)
}


def documented() -> set[str]:
    return set(re.findall(r"^\| `(task_framework_[a-z_]+)` \|", DOC.read_text(), re.M))


def defined() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name + ("_total" if family.type == "counter" else ""))
    return names


def test_every_defined_metric_is_documented_and_vice_versa() -> None:
    assert documented() == defined()


def series(text: str) -> Counter[str]:
    """Series per metric family (histogram _bucket/_sum/_count folded into the family)."""
    counts: Counter[str] = Counter()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name = line.split("{", 1)[0].split(" ", 1)[0]
        family = re.sub(r"_(bucket|sum|count)$", "", name)
        counts[family] += 1
    return counts


async def workload(server: Server, receiver: Receiver, threads: int) -> None:
    user = server.user()
    for i in range(threads):
        body = {"mode": "sync", "inputs": [{"kind": "json", "value": {"name": f"n{i}"}}]}
        done = await server.client.post("/threads", headers=user, json=body)
        assert done.status_code == 201
        thread = done.json()
        await server.client.get(f"/threads/{thread['id']}", headers=user)
        await server.client.get(f"/threads/{thread['id']}/logs", headers=user)
        if i % 2:
            artifact = thread["outputs"][0]["id"]
            await server.client.post(f"/artifacts/{artifact}:archive", headers=user)
        await server.client.get(f"/threads/thread_{i:032x}", headers=user)  # 404
    upload = await server.client.post(
        "/files", headers=user, files={"file": ("a.txt", b"hello", "text/plain")}
    )
    assert upload.status_code == 200
    ref = upload.json()["file_ref"]
    assert (await server.client.get(f"/files/{ref}", headers=user)).content == b"hello"
    await server.client.get("/task/metadata")


async def test_scrape_after_mixed_workload_and_bounded_cardinality(
    make_server: ServerFactory,
) -> None:
    receiver = await Receiver().start()
    try:
        server = await make_server(webhook_allow_private_networks=True)
        user = server.user()
        hook = await server.client.post("/webhooks", headers=user, json={"url": receiver.url})
        assert hook.status_code == 201
        schedule = await server.client.post(
            "/schedules",
            headers=user,
            json={
                "cron": "0 3 * * *",
                "timezone": "UTC",
                "inputs_template": [{"kind": "json", "value": {}}],
            },
        )
        assert schedule.status_code == 201
        trigger = await server.client.post(
            f"/schedules/{schedule.json()['id']}:trigger", headers=user
        )
        assert trigger.status_code == 201
        await workload(server, receiver, threads=3)
        await receiver.wait_for(1)
        # Cluster gauges refresh every 15 s in the background; take one snapshot now.
        await refresh(server.services.stats, server.services.metrics)
        await server.client.get("/metrics")  # so the scrape route itself is counted once
        first = (await server.client.get("/metrics")).text

        for name in documented():
            assert f"# TYPE {name.removesuffix('_total')}" in first, name
        with_samples = set(series(first))
        missing = {
            n
            for n in documented() - LABELLED_BY_WORKLOAD
            if n not in with_samples and n.removesuffix("_total") not in with_samples
        }
        assert not missing, f"no samples after the workload: {sorted(missing)}"

        await workload(server, receiver, threads=9)
        second = (await server.client.get("/metrics")).text
        before, after = series(first), series(second)
        grown = {k: (before[k], after[k]) for k in after if after[k] > before.get(k, 0)}
        assert not grown, f"series grew with the number of threads: {grown}"
        assert not re.search(r"thread_[0-9a-f]{32}|file_[0-9a-f]{32}", second)
    finally:
        await receiver.stop()
