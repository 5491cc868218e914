"""Failed authentication is limited per client address and per key prefix (issue 15 item 5).

Regression: 300 wrong UI sign-ins in 1.5 s, then the right key worked; the same for API
and admin keys. Now the address (or the key prefix) gets 429 ``AUTH_RATE_LIMITED`` with
``Retry-After`` before any key is checked, so the right key does not get in either until
the limit has passed; callers from elsewhere are not affected.
"""

from __future__ import annotations

import asyncio
import re
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import httpx

from conftest import Server, ServerFactory

WRONG_ATTEMPTS = 300
MAX_FAILURES = 20


def wrong_key() -> str:
    return f"tfk_{secrets.token_urlsafe(32)}"  # a new prefix every time: only the address counts


@asynccontextmanager
async def from_address(server: Server, host: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=server.app, client=(host, 40000))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://testserver", timeout=60
    ) as client:
        yield client


def assert_limited(response: httpx.Response) -> None:
    assert response.status_code == 429, response.text
    assert int(response.headers["retry-after"]) >= 1
    detail = response.json()["detail"]
    assert detail["code"] == "AUTH_RATE_LIMITED"
    assert detail["status"] == 429


async def hammer(
    send: Callable[[], Awaitable[httpx.Response]], attempts: int = WRONG_ATTEMPTS
) -> list[int]:
    return [(await send()).status_code for _ in range(attempts)]


async def test_wrong_api_keys_from_one_address_get_429_and_then_the_right_key_too(
    make_server: ServerFactory,
) -> None:
    server = await make_server(dev_tasks=[])
    user = server.user()
    async with from_address(server, "203.0.113.7") as attacker:
        statuses = await hammer(
            lambda: attacker.get("/threads", headers={**user, "X-API-Key": wrong_key()})
        )
        assert statuses[:MAX_FAILURES] == [401] * MAX_FAILURES
        assert set(statuses[MAX_FAILURES:]) == {429}
        assert_limited(await attacker.get("/threads", headers=user))  # the right key
    async with from_address(server, "198.51.100.9") as bystander:
        assert (await bystander.get("/threads", headers=user)).status_code == 200
    scrape = (await server.client.get("/metrics")).text
    invalid = re.search(r'auth_failures_total\{outcome="invalid",surface="api"\} (\S+)', scrape)
    limited = re.search(r'auth_failures_total\{outcome="limited",surface="api"\} (\S+)', scrape)
    assert invalid is not None
    assert float(invalid.group(1)) == MAX_FAILURES
    assert limited is not None
    assert float(limited.group(1)) == WRONG_ATTEMPTS - MAX_FAILURES + 1


async def test_wrong_admin_keys_get_429(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    async with from_address(server, "203.0.113.8") as attacker:
        statuses = await hammer(
            lambda: attacker.get("/admin/api-keys", headers={"X-Admin-API-Key": wrong_key()})
        )
        assert statuses[:MAX_FAILURES] == [401] * MAX_FAILURES
        assert set(statuses[MAX_FAILURES:]) == {429}
        assert_limited(await attacker.get("/admin/api-keys", headers=server.admin))


async def test_one_key_prefix_is_limited_across_addresses(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[])
    target = server.admin_key[:12]
    for i in range(MAX_FAILURES):
        async with from_address(server, f"192.0.2.{i + 1}") as bot:
            guess = target + secrets.token_hex(8)
            response = await bot.get("/admin/api-keys", headers={"X-API-Key": guess})
            assert response.status_code == 401
    async with from_address(server, "192.0.2.200") as fresh:
        assert_limited(await fresh.get("/admin/api-keys", headers={"X-API-Key": target + "x"}))
        # Another key, from the same fresh address, is not held up.
        assert (await fresh.get("/threads", headers=server.user())).status_code == 200


def login_token(html: str) -> str:
    found = re.search(r'name="login_token" value="([^"]+)"', html)
    assert found is not None, "no sign-in form"
    return found.group(1)


async def test_wrong_ui_sign_ins_get_429_and_the_right_key_no_session(
    make_server: ServerFactory,
) -> None:
    server = await make_server(dev_tasks=[])
    async with from_address(server, "203.0.113.9") as browser:
        token = login_token((await browser.get("/ui/login")).text)

        async def sign_in(key: str) -> httpx.Response:
            nonlocal token
            response = await browser.post("/ui/login", data={"api_key": key, "login_token": token})
            token = login_token(response.text)  # every answer comes with a fresh form
            return response

        statuses = await hammer(lambda: sign_in(wrong_key()))
        assert statuses[:MAX_FAILURES] == [401] * MAX_FAILURES
        assert set(statuses[MAX_FAILURES:]) == {429}
        right = await sign_in(server.admin_key)
        assert right.status_code == 429
        assert int(right.headers["retry-after"]) >= 1
        assert "Too many failed sign-ins" in right.text
        assert "tf_session" not in browser.cookies


async def test_the_limit_passes_after_retry_after(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[], auth_max_failures=3, auth_failure_window_seconds=3)
    user = server.user()
    async with from_address(server, "203.0.113.10") as client:
        for _ in range(3):
            bad = await client.get("/threads", headers={**user, "X-API-Key": wrong_key()})
            assert bad.status_code == 401
        refused = await client.get("/threads", headers=user)
        assert_limited(refused)
        # One token a second; the refused attempt left the bucket 2 short.
        assert int(refused.headers["retry-after"]) == 2
        await asyncio.sleep(2)
        assert (await client.get("/threads", headers=user)).status_code == 200


async def test_zero_switches_the_limit_off(make_server: ServerFactory) -> None:
    server = await make_server(dev_tasks=[], auth_max_failures=0)
    user = server.user()
    statuses = await hammer(
        lambda: server.client.get("/threads", headers={**user, "X-API-Key": wrong_key()}), 50
    )
    assert set(statuses) == {401}
    assert (await server.client.get("/threads", headers=user)).status_code == 200
