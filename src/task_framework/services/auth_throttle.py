"""Limits on failed authentication: no unlimited guessing of keys (issue 15 item 5).

Every client address and every key prefix (the first characters of the key presented)
has a bucket of :data:`DEFAULT_MAX_FAILURES` tokens. A failed authentication (an
unknown, revoked or expired key) takes one; tokens come back at ``max_failures`` per
``window_seconds``. While the address or the prefix of a request has no token left, the
request is refused with 429 ``AUTH_RATE_LIMITED`` and ``Retry-After`` *before* its key is
looked at: a correct key from a limited address gets 429 too, so guessing from one
address (or at one key) is held to ``max_failures`` per window however fast it is tried.
A refused request takes a token from the bucket that refused it as well, down to a debt
of one window: whoever keeps trying stays limited, and after a flood the limit lasts
about one window from the last attempt (``Retry-After`` says how long exactly).

Only failures write: a caller with a correct key costs two dictionary lookups and no
database access. The buckets live in memory, per replica (N replicas behind a balancer
allow N times the rate), in one LRU of at most ``max_entries`` buckets; buckets that
have filled up again are dropped, least recently failed first. IPv6 addresses count per
/64, since one host usually holds a whole /64.
"""

from __future__ import annotations

import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable

from task_framework.errors import AuthRateLimited

DEFAULT_MAX_FAILURES = 20
DEFAULT_WINDOW_SECONDS = 60.0
DEFAULT_MAX_ENTRIES = 100_000
KEY_PREFIX_CHARS = 12
"""Characters of a presented key that name its bucket (the prefix shown for managed keys)."""
IPV6_NETWORK_BITS = 64
MAX_ADDRESS_CHARS = 64

Clock = Callable[[], float]


def address_bucket(host: str | None) -> str | None:
    """The bucket name of a client address: IPv4 as is, IPv6 by its /64."""
    if not host:
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return "host:" + host[:MAX_ADDRESS_CHARS]  # a unix socket or a test client name
    if address.version == 6:
        network = ipaddress.ip_network(f"{address}/{IPV6_NETWORK_BITS}", strict=False)
        return f"ip:{network}"
    return f"ip:{address}"


def key_bucket(key: str | None) -> str | None:
    return "key:" + key[:KEY_PREFIX_CHARS] if key else None


class AuthThrottle:
    """Token buckets of failed authentications, by client address and by key prefix.

    ``max_failures=0`` switches the limits off.
    """

    def __init__(
        self,
        *,
        max_failures: int = DEFAULT_MAX_FAILURES,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        clock: Clock = time.monotonic,
    ) -> None:
        self._capacity = float(max_failures)
        self._rate = max_failures / window_seconds  # tokens per second
        self._max_entries = max_entries
        self._clock = clock
        # bucket name -> [tokens, time of the last failure]
        self._buckets: OrderedDict[str, list[float]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._capacity > 0

    def __len__(self) -> int:
        return len(self._buckets)

    def _tokens(self, bucket: list[float], now: float) -> float:
        return min(self._capacity, bucket[0] + (now - bucket[1]) * self._rate)

    def check(self, address: str | None, key: str | None) -> None:
        """Raise :class:`AuthRateLimited` while the address or the key prefix has no token
        (and count the refused attempt against the bucket that has none)."""
        if not self.enabled or not self._buckets:
            return  # the common case: nobody failed lately
        now = self._clock()
        wait = 0.0
        for name in (address_bucket(address), key_bucket(key)):
            bucket = self._buckets.get(name) if name is not None else None
            if bucket is None:
                continue
            tokens = self._tokens(bucket, now)
            if tokens < 1.0:
                tokens = max(tokens - 1.0, -self._capacity)
                bucket[0], bucket[1] = tokens, now
                assert name is not None
                self._buckets.move_to_end(name)
                wait = max(wait, (1.0 - tokens) / self._rate)
        if wait > 0:
            seconds = max(1, math.ceil(wait))
            raise AuthRateLimited(
                "Too many failed authentications from this address or for this key; "
                f"retry in {seconds} s",
                extra={"retry_after": seconds},
            )

    def failed(self, address: str | None, key: str | None) -> None:
        """Count one failed authentication against the address and the key prefix."""
        if not self.enabled:
            return
        now = self._clock()
        for name in (address_bucket(address), key_bucket(key)):
            if name is None:
                continue
            bucket = self._buckets.get(name)
            if bucket is None:
                self._buckets[name] = [self._capacity - 1.0, now]
            else:
                bucket[0], bucket[1] = self._tokens(bucket, now) - 1.0, now
                self._buckets.move_to_end(name)
        while len(self._buckets) > self._max_entries:
            self._buckets.popitem(last=False)
        self._drop_full(now)

    def _drop_full(self, now: float) -> None:
        # The least recently failed buckets first: once one has refilled, it is forgotten.
        while self._buckets:
            name, bucket = next(iter(self._buckets.items()))
            if self._tokens(bucket, now) < self._capacity:
                return
            del self._buckets[name]


__all__ = [
    "DEFAULT_MAX_ENTRIES",
    "DEFAULT_MAX_FAILURES",
    "DEFAULT_WINDOW_SECONDS",
    "KEY_PREFIX_CHARS",
    "AuthThrottle",
    "address_bucket",
    "key_bucket",
]
