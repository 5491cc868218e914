"""Token buckets of failed authentications, on a fake clock."""

from __future__ import annotations

from task_framework.errors import AuthRateLimited
from task_framework.services.auth_throttle import AuthThrottle, address_bucket, key_bucket


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def retry_after(throttle: AuthThrottle, address: str | None, key: str | None) -> int | None:
    try:
        throttle.check(address, key)
    except AuthRateLimited as exc:
        seconds = exc.extra["retry_after"]
        assert isinstance(seconds, int)
        return seconds
    return None


def test_failures_beyond_the_burst_are_refused_until_tokens_are_back() -> None:
    clock = Clock()
    throttle = AuthThrottle(max_failures=5, window_seconds=60, clock=clock)  # 1 per 12 s
    for i in range(5):
        assert retry_after(throttle, "10.0.0.1", f"wrong-key-{i:04}") is None
        throttle.failed("10.0.0.1", f"wrong-key-{i:04}")
    # The right key is refused too; the refused attempt counts: 2 tokens short now.
    assert retry_after(throttle, "10.0.0.1", "the-right-key") == 24
    assert retry_after(throttle, "10.0.0.2", "the-right-key") is None  # another address
    clock.now += 24
    assert retry_after(throttle, "10.0.0.1", "the-right-key") is None


def test_who_keeps_trying_stays_limited_for_at_most_a_window_after() -> None:
    clock = Clock()
    throttle = AuthThrottle(max_failures=5, window_seconds=60, clock=clock)
    for i in range(5):
        throttle.failed("10.0.0.1", f"wrong-key-{i:04}")
    for _ in range(1000):
        clock.now += 0.01
        assert retry_after(throttle, "10.0.0.1", "guess") is not None
    assert retry_after(throttle, "10.0.0.1", "guess") == 72  # the debt stops at one window
    clock.now += 72
    assert retry_after(throttle, "10.0.0.1", "the-right-key") is None


def test_one_key_prefix_is_limited_across_addresses() -> None:
    throttle = AuthThrottle(max_failures=3, window_seconds=60, clock=Clock())
    for i in range(3):
        throttle.failed(f"192.0.2.{i}", "tfk_AAAAAAAA" + f"guess{i}")
    assert retry_after(throttle, "192.0.2.99", "tfk_AAAAAAAAanything") == 40
    assert retry_after(throttle, "192.0.2.99", "tfk_BBBBBBBBanything") is None


def test_ipv6_counts_per_64() -> None:
    assert address_bucket("2001:db8:1:2::1") == address_bucket("2001:db8:1:2:ffff::9")
    assert address_bucket("2001:db8:1:3::1") != address_bucket("2001:db8:1:2::1")
    assert address_bucket("127.0.0.1") == "ip:127.0.0.1"
    assert address_bucket(None) is None
    assert key_bucket("") is None


def test_successes_write_nothing_and_full_buckets_are_forgotten() -> None:
    clock = Clock()
    throttle = AuthThrottle(max_failures=2, window_seconds=10, clock=clock)
    for _ in range(1000):
        throttle.check("10.0.0.1", "a-correct-key")
    assert len(throttle) == 0
    throttle.failed("10.0.0.1", "wrong")
    assert len(throttle) == 2  # the address and the prefix
    clock.now += 10
    throttle.failed("10.0.0.2", "other")  # the refilled buckets are dropped meanwhile
    assert len(throttle) == 2


def test_memory_is_bounded() -> None:
    throttle = AuthThrottle(max_failures=5, window_seconds=60, max_entries=100, clock=Clock())
    for i in range(10_000):
        throttle.failed(f"10.{i // 65536}.{i // 256 % 256}.{i % 256}", f"k{i}")
    assert len(throttle) == 100


def test_zero_switches_the_limits_off() -> None:
    throttle = AuthThrottle(max_failures=0, clock=Clock())
    for _ in range(100):
        throttle.failed("10.0.0.1", "wrong")
    assert retry_after(throttle, "10.0.0.1", "wrong") is None
    assert len(throttle) == 0
