"""The errors the records store raises at its boundary.

Store implementations translate driver errors (SQLAlchemy's ``IntegrityError``,
``OperationalError``, ...) into these, keeping the driver error as ``__cause__``, so
services handle store outcomes without importing SQLAlchemy.

Each is also a :class:`~task_framework.errors.TaskFrameworkError` with the status it had
before the store port existed, so one a service does not handle still maps to the same
response::

    StoreError                    base; 500 INTERNAL_ERROR
    ├── StoreUnavailable          also ServiceUnavailable: 503 SERVICE_UNAVAILABLE
    ├── UniqueViolation           also Conflict: 409 CONFLICT
    └── RecordNotFound            also NotFound: 404 NOT_FOUND

Services translate ``RecordNotFound`` and ``UniqueViolation`` into their own errors
(``API_KEY_NOT_FOUND``, ...) where the API names one.
"""

from __future__ import annotations

from task_framework.errors import Conflict, NotFound, ServiceUnavailable, TaskFrameworkError

__all__ = ["RecordNotFound", "StoreError", "StoreUnavailable", "UniqueViolation"]


class StoreError(TaskFrameworkError):
    """A store operation failed; the driver error, if any, is the ``__cause__``."""


class StoreUnavailable(StoreError, ServiceUnavailable):
    """The database cannot be reached, or the connection was lost mid-transaction."""


class UniqueViolation(StoreError, Conflict):
    """A write would duplicate a unique key; nothing of the statement was written."""

    def __init__(self, message: str) -> None:
        super().__init__(message, code=Conflict.code)


class RecordNotFound(StoreError, NotFound):
    """The record an operation names does not exist; ``missing`` names the records an
    operation needed and did not find, when it needed several."""

    def __init__(self, message: str, *, missing: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.missing = missing
