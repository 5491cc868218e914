"""``from task_framework.logging import logger``: the task's log, importable at module level.

Task code written for task-framework-py 0.0.20b0 logs through this module-level logger
rather than ``context.logger``. Both reach the same place: the running thread's log
(``GET /threads/{id}/logs``), at the task's level (``log_level`` in
``task_metadata.json``, INFO by default).

Records may be written the standard-library way (``logger.info("got %s", name)``) or the
structured way (``logger.info("order.placed", order_id=7)``): keyword fields are appended
to the message as ``key=value`` pairs, and ``logger.bind(order_id=7)`` returns a logger
that adds them to every record.
"""

from __future__ import annotations

import logging as _logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

TASK_LOGGER_NAME = "task"
"""The standard-library logger the task's records go through in a worker process."""

_STDLIB_KEYWORDS = frozenset({"exc_info", "stack_info", "stacklevel", "extra"})

_current: ContextVar[_logging.Logger | None] = ContextVar("task_framework_logger", default=None)


@contextmanager
def running_with(logger: _logging.Logger) -> Iterator[None]:
    """While a task function runs: module-level loggers write to ``logger`` (its thread's)."""
    token = _current.set(logger)
    try:
        yield
    finally:
        _current.reset(token)


def _render(value: Any) -> str:
    text = value if isinstance(value, str) else repr(value)
    return f'"{text}"' if isinstance(value, str) and (" " in text or not text) else text


class TaskLogger:
    """A logger for task code that writes to the running thread's log."""

    __slots__ = ("_fields", "_name")

    def __init__(self, name: str | None = None, fields: Mapping[str, Any] | None = None) -> None:
        self._name = name
        self._fields: dict[str, Any] = dict(fields or {})

    def bind(self, **fields: Any) -> TaskLogger:
        """A logger that adds ``fields`` to every record."""
        return TaskLogger(self._name, {**self._fields, **fields})

    def unbind(self, *names: str) -> TaskLogger:
        return TaskLogger(self._name, {k: v for k, v in self._fields.items() if k not in names})

    def _target(self) -> _logging.Logger:
        base = _current.get() or _logging.getLogger(TASK_LOGGER_NAME)
        if not self._name or _logging.Logger.manager.loggerDict.get(base.name) is not base:
            return base  # a private per-run logger (inline runs) has no children
        return base.getChild(self._name)

    def isEnabledFor(self, level: int) -> bool:
        return self._target().isEnabledFor(level)

    def _emit(self, level: int, msg: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        target = self._target()
        if not target.isEnabledFor(level):
            return
        options = {k: kwargs.pop(k) for k in _STDLIB_KEYWORDS & kwargs.keys()}
        fields = {**self._fields, **kwargs}
        message = str(msg) % args if args else str(msg)
        if fields:
            message += " " + " ".join(f"{k}={_render(v)}" for k, v in fields.items())
        # Attribute the record to the task code's line: past _emit and the level method.
        options["stacklevel"] = int(options.get("stacklevel", 1)) + 2
        target.log(level, "%s", message, **options)

    def log(self, level: int, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._emit(level, msg, args, kwargs)

    def debug(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._emit(_logging.DEBUG, msg, args, kwargs)

    def info(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._emit(_logging.INFO, msg, args, kwargs)

    def warning(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._emit(_logging.WARNING, msg, args, kwargs)

    warn = warning

    def error(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._emit(_logging.ERROR, msg, args, kwargs)

    def exception(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("exc_info", True)
        self._emit(_logging.ERROR, msg, args, kwargs)

    def critical(self, msg: Any, *args: Any, **kwargs: Any) -> None:
        self._emit(_logging.CRITICAL, msg, args, kwargs)

    fatal = critical


def get_logger(name: str | None = None, **fields: Any) -> TaskLogger:
    """A task logger, optionally named (``task.<name>``) and with bound fields."""
    return TaskLogger(name, fields)


logger = TaskLogger()
"""The task's logger: ``from task_framework.logging import logger``."""

__all__ = ["TaskLogger", "get_logger", "logger", "running_with"]
