"""Identifiers (API.md §1.1): a prefix and 32 lowercase hex characters."""

from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"
