"""Structured logs: one JSON object per line (API.md §13).

Every line has ``timestamp`` (UTC, milliseconds, ``Z``), ``level``, ``logger``, ``event``
(a stable dotted name such as ``thread.created``), ``request_id`` while a request is being
served, ``trace_id`` and ``span_id`` while a span is current (tracing on), plus the context
the caller bound. Records of the standard :mod:`logging` module
(uvicorn, SQLAlchemy, ...) go through the same renderer; their free-text message is kept
under ``message`` with ``event`` = ``log.message``.

Secrets never reach the output: values of secret-looking keys are replaced by ``***``, and
API keys (``tfk_...``), webhook secrets (``whsec_...``), ``api_key=...``-style pairs and
bearer tokens are masked inside any string, including messages and tracebacks.

:func:`configure_logging` is idempotent; :func:`reset_logging` undoes it (for tests).
"""

from __future__ import annotations

import functools
import logging
import re
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from task_framework.observability.tracing import current_log_ids

__all__ = [
    "MASK",
    "configure_logging",
    "get_logger",
    "redact_secrets",
    "reset_logging",
]

MASK = "***"
FOREIGN_EVENT = "log.message"
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access")
# httpx logs every request (webhook URLs included) at INFO, alembic one line per plugin
# at every start; keep those at WARNING and up.
QUIET_LOGGERS = ("httpx", "httpcore", "alembic.runtime.plugins")
_LEVELS = {
    "DEBUG": logging.DEBUG,
    "INFO": logging.INFO,
    "WARN": logging.WARNING,
    "WARNING": logging.WARNING,
    "ERROR": logging.ERROR,
}
_KEY_ORDER = ("timestamp", "level", "logger", "event", "request_id", "trace_id", "span_id")
_MAX_DEPTH = 6

# -- redaction -----------------------------------------------------------------------------

_SECRET_WORDS = frozenset(
    {
        "secret",
        "secrets",
        "password",
        "passwd",
        "token",
        "signature",
        "signatures",
        "authorization",
        "cookie",
    }
)
_SECRET_SUFFIXES = (
    "api_key",
    "apikey",
    "admin_key",
    "encryption_key",
    "signing_key",
    "private_key",
    "credential_value",
    "credential_values",
)
_CREDENTIAL_VALUE_KEYS = frozenset({"value", "values"})

_SECRET_TEXT = re.compile(
    r"(?P<tfk>tfk_)[A-Za-z0-9_-]{16,}"
    r"|(?P<whsec>whsec_)[A-Za-z0-9+/=_-]{8,}"
    r"|(?P<pair>\b(?:x[-_])?(?:admin[-_])?"
    r"(?:api[-_]?key|password|passwd|secret|token|signature|sig|encryption[-_]key|"
    r"signing[-_]key|authorization)"
    r"[\"']?\s*[=:]\s*[\"']?)[^\s&,;\"']+"
    r"|(?P<auth>\b(?:Bearer|Basic)\s+)[A-Za-z0-9._~+/=-]{8,}",
    re.IGNORECASE,
)


def _mask_match(match: re.Match[str]) -> str:
    return (
        match.group("tfk")
        or match.group("whsec")
        or match.group("pair")
        or match.group("auth")
        or ""
    ) + MASK


@functools.lru_cache(maxsize=1024)
def _is_secret_key(key: str) -> bool:
    normalised = key.lower().replace("-", "_")
    if normalised.endswith(_SECRET_SUFFIXES):
        return True
    return any(part in _SECRET_WORDS for part in normalised.split("_"))


def _redact_value(value: Any, depth: int) -> Any:
    if isinstance(value, str):
        return _SECRET_TEXT.sub(_mask_match, value)
    if depth >= _MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return _redact_mapping(value, depth + 1, credential=False)
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact_value(item, depth + 1) for item in value]
    return value


def _redact_mapping(data: Mapping[Any, Any], depth: int, *, credential: bool) -> dict[Any, Any]:
    credential = credential or any(
        isinstance(key, str) and key.lower().startswith("credential") for key in data
    )
    out: dict[Any, Any] = {}
    for key, value in data.items():
        if isinstance(key, str) and (
            _is_secret_key(key) or (credential and key.lower() in _CREDENTIAL_VALUE_KEYS)
        ):
            # None and booleans ("signature_valid") reveal nothing; keep them readable.
            out[key] = value if value is None or isinstance(value, bool) else MASK
        else:
            out[key] = _redact_value(value, depth)
    return out


def redact_secrets(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """structlog processor: mask secret-looking keys and secrets inside strings."""
    event = event_dict.get("event")
    credential = isinstance(event, str) and event.startswith("credential")
    return _redact_mapping(event_dict, 0, credential=credential)


# -- other processors ----------------------------------------------------------------------


def _format_timestamp(epoch_s: float) -> str:
    seconds = int(epoch_s)
    millis = int((epoch_s - seconds) * 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z"


def _add_timestamp(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    record = event_dict.get("_record")
    created = record.created if isinstance(record, logging.LogRecord) else time.time()
    event_dict["timestamp"] = _format_timestamp(created)
    return event_dict


_DOTTED_NAME = re.compile(r"[a-z0-9_]+(?:\.[a-z0-9_]+)+")


def _shape_foreign(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Give a stdlib record a stable event name; keep its text under ``message``."""
    args = event_dict.pop("positional_args", None)
    record = event_dict.get("_record")
    if (
        isinstance(record, logging.LogRecord)
        and record.name == "uvicorn.access"
        and isinstance(args, tuple)
        and len(args) == 5
    ):
        client, method, path, http_version, status = args
        event_dict.update(
            event="http.access",
            client=client,
            method=method,
            path=path,
            http_version=http_version,
            status=status,
        )
        return event_dict
    event_dict.pop("color_message", None)  # uvicorn's copy of the message with ANSI codes
    message = event_dict.get("event")
    if not (isinstance(message, str) and _DOTTED_NAME.fullmatch(message)):
        event_dict["event"] = FOREIGN_EVENT
        event_dict["message"] = message
    return event_dict


def _message_as_event(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """Console lines: a stdlib record reads as its own text, not ``log.message``."""
    if event_dict.get("event") == FOREIGN_EVENT and "message" in event_dict:
        event_dict["event"] = event_dict.pop("message")
    return event_dict


def _add_trace_ids(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` and ``span_id`` of the current span, when tracing is on and one is."""
    ids = current_log_ids()
    if ids is not None:
        event_dict.setdefault("trace_id", ids[0])
        event_dict.setdefault("span_id", ids[1])
    return event_dict


def _order_keys(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
    ordered = {key: event_dict.pop(key) for key in _KEY_ORDER if key in event_dict}
    ordered.update(event_dict)
    return ordered


# -- configuration -------------------------------------------------------------------------


class _JsonLinesHandler(logging.StreamHandler[TextIO]):
    """Writes to ``stream``, or to whatever ``sys.stdout`` is at emit time.

    Following ``sys.stdout`` keeps working when it is swapped later (pytest capture).
    """

    def __init__(self, stream: TextIO | None) -> None:
        super().__init__(stream if stream is not None else sys.stdout)
        self._follow_stdout = stream is None

    def emit(self, record: logging.LogRecord) -> None:
        if self._follow_stdout:
            self.stream = sys.stdout
        super().emit(record)


@dataclass
class _Saved:
    root_level: int
    uvicorn: dict[str, tuple[list[logging.Handler], bool]]
    quiet_levels: dict[str, int]
    structlog_config: dict[str, Any] | None


_saved: _Saved | None = None


def _level_number(level: str) -> int:
    return _LEVELS.get(level.strip().upper(), logging.INFO)


def _console(stream: TextIO | None, log_format: str) -> bool:
    if log_format != "auto":
        return log_format == "console"
    target = stream if stream is not None else sys.stdout
    try:
        return target.isatty()
    except (AttributeError, ValueError):
        return False


def configure_logging(
    level: str = "INFO", *, stream: TextIO | None = None, log_format: str = "json"
) -> None:
    """Send structlog and stdlib logging to ``stream`` (default stdout): JSON lines, or
    readable lines for a person (``log_format`` ``console``, or ``auto`` on a terminal).

    Calling it again replaces the previous configuration (no duplicate handlers). Run
    uvicorn with ``log_config=None`` afterwards so it does not install its own handlers.
    """
    global _saved
    root = logging.getLogger()
    if _saved is None:
        _saved = _Saved(
            root_level=root.level,
            uvicorn={
                name: (list(logging.getLogger(name).handlers), logging.getLogger(name).propagate)
                for name in UVICORN_LOGGERS
            },
            quiet_levels={name: logging.getLogger(name).level for name in QUIET_LOGGERS},
            structlog_config=structlog.get_config() if structlog.is_configured() else None,
        )

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        _add_timestamp,
        _add_trace_ids,
    ]
    final: list[Processor] = [
        structlog.stdlib.ProcessorFormatter.remove_processors_meta,
        structlog.processors.StackInfoRenderer(),
    ]
    if _console(stream, log_format):
        target = stream if stream is not None else sys.stdout
        final += [
            redact_secrets,
            _message_as_event,
            structlog.dev.ConsoleRenderer(colors=_console(target, "auto")),
        ]
    else:
        final += [
            structlog.processors.format_exc_info,
            redact_secrets,
            _order_keys,
            structlog.processors.JSONRenderer(),
        ]
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(), _shape_foreign],
        processors=final,
        pass_foreign_args=True,
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        # No caching: a logger used before configure_logging (at import, in a test) would
        # otherwise keep the default console configuration forever.
        cache_logger_on_first_use=False,
    )

    _remove_own_handlers(root)
    handler = _JsonLinesHandler(stream)
    handler.setFormatter(formatter)
    root.addHandler(handler)
    root.setLevel(_level_number(level))
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(_level_number(level), logging.WARNING))
    for name in UVICORN_LOGGERS:
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True


def reset_logging() -> None:
    """Undo :func:`configure_logging`: restore the root logger, uvicorn loggers and structlog."""
    global _saved
    root = logging.getLogger()
    _remove_own_handlers(root)
    structlog.contextvars.clear_contextvars()
    if _saved is None:
        return
    root.setLevel(_saved.root_level)
    for name, (handlers, propagate) in _saved.uvicorn.items():
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers[:] = handlers
        uvicorn_logger.propagate = propagate
    for name, quiet_level in _saved.quiet_levels.items():
        logging.getLogger(name).setLevel(quiet_level)
    if _saved.structlog_config is None:
        structlog.reset_defaults()
    else:
        structlog.configure(**_saved.structlog_config)
    _saved = None


def _remove_own_handlers(root: logging.Logger) -> None:
    for handler in [h for h in root.handlers if isinstance(h, _JsonLinesHandler)]:
        root.removeHandler(handler)
        handler.close()


def get_logger(name: str | None = None) -> structlog.stdlib.BoundLogger:
    """A structlog logger; pass a dotted event name as the first argument of each call."""
    return structlog.stdlib.get_logger(name)
