"""The store's errors: what a driver error becomes at the boundary, and what an
untranslated store error still answers."""

from __future__ import annotations

import pytest
from sqlalchemy import Connection, insert

from task_framework.errors import Conflict, NotFound, ServiceUnavailable
from task_framework.ids import new_id
from task_framework.models._time import utcnow
from task_framework.store.database import Database
from task_framework.store.errors import (
    RecordNotFound,
    StoreError,
    StoreUnavailable,
    UniqueViolation,
)
from task_framework.store.sql._dialect import translated
from task_framework.store.tables import api_keys


def test_store_errors_keep_the_responses_they_had_before_the_port() -> None:
    cases = [
        (StoreUnavailable("down"), ServiceUnavailable, 503, "SERVICE_UNAVAILABLE"),
        (UniqueViolation("twice"), Conflict, 409, "CONFLICT"),
        (RecordNotFound("gone"), NotFound, 404, "NOT_FOUND"),
    ]
    for error, domain, status, code in cases:
        assert isinstance(error, StoreError)
        assert isinstance(error, domain)
        assert (error.status, error.code) == (status, code)
    assert (StoreError("x").status, StoreError("x").code) == (500, "INTERNAL_ERROR")
    assert RecordNotFound("gone", missing=("a",)).missing == ("a",)


async def test_an_unreachable_database_is_store_unavailable() -> None:
    unreachable = Database("postgresql://postgres@127.0.0.1:1/nowhere")  # nothing listens on port 1
    try:
        with pytest.raises(StoreUnavailable) as caught:
            await unreachable.ping()
        assert caught.value.__cause__ is not None
    finally:
        await unreachable.close()


async def test_integrity_errors_become_store_errors(store_db: Database) -> None:
    row = {
        "id": new_id("apikey"),
        "name": "k",
        "role": "user",
        "key_hash": "a" * 64,
        "prefix": "tfk_a",
        "created_at": utcnow(),
    }

    def add(conn: Connection, values: dict[str, object]) -> None:
        conn.execute(insert(api_keys).values(**values))

    await store_db.tx(add, row)
    with pytest.raises(UniqueViolation) as duplicate, translated("API key"):
        await store_db.tx(add, {**row, "id": new_id("apikey")})
    assert duplicate.value.__cause__ is not None
    with pytest.raises(StoreError) as refused, translated("API key"):
        await store_db.tx(add, {**row, "id": new_id("apikey"), "key_hash": "b" * 64, "name": None})
    assert not isinstance(refused.value, UniqueViolation)
