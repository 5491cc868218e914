"""Identifiers (API.md §1.1): a prefix and 32 lowercase hex characters.

The hex part is a UUID version 7 (RFC 9562): 48 bits of Unix milliseconds, then 74 random
bits. New rows therefore land at the end of every index keyed by id instead of on a
random page, which keeps inserts and the write-ahead log small on large tables; the 74
random bits keep ids unguessable.
"""

from __future__ import annotations

import os
import time

_VERSION_7 = 0x7 << 76
_VARIANT = 0b10 << 62


def uuid7_hex() -> str:
    millis = time.time_ns() // 1_000_000
    rand = int.from_bytes(os.urandom(10))  # 80 bits; 74 are used
    rand_a = (rand >> 68) & 0xFFF
    rand_b = rand & ((1 << 62) - 1)
    return f"{(millis << 80) | _VERSION_7 | (rand_a << 64) | _VARIANT | rand_b:032x}"


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid7_hex()}"
