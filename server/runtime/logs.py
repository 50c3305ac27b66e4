"""Structured JSON logs with secrets redacted before anything is written.

Two layers of redaction: keys that name a secret (token, secret, password, authorization, code,
clientState) are masked whatever their value, and every registered secret value (credentials loaded
at start-up) is replaced wherever it appears inside any logged string.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

REDACTED = "[redacted]"
_SECRET_KEY = re.compile(
    r"(secret|token|password|authorization|auth_token|api_key|client_?state|^code$|otp|passcode)", re.I
)

_lock = threading.Lock()
_secret_values: set[str] = set()


def register_secrets(values: Iterable[str | None]) -> None:
    """Remember secret values so they are masked wherever they would appear in a log line."""
    with _lock:
        for value in values:
            if value and len(value) >= 4:
                _secret_values.add(value)


def redact_text(text: str) -> str:
    with _lock:
        secrets = sorted(_secret_values, key=len, reverse=True)
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def _redact_value(key: str, value: Any) -> Any:
    if _SECRET_KEY.search(key):
        return REDACTED
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, dict):
        return {k: _redact_value(str(k), v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact_value(key, v) for v in value]
    return value


def redact_processor(
    _logger: Any, _name: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    for key in list(event_dict):
        if key == "event":
            event_dict[key] = redact_text(str(event_dict[key]))
        else:
            event_dict[key] = _redact_value(key, event_dict[key])
    return event_dict


def configure_logging(level: str = "INFO", stream: TextIO | None = None) -> None:
    """JSON lines on stderr (or `stream`); stdlib loggers (uvicorn, httpx) go through the same redaction."""
    out = stream or sys.stderr
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        redact_processor,
    ]
    structlog.configure(
        processors=[*shared, structlog.processors.JSONRenderer()],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(out),
        cache_logger_on_first_use=False,
    )
    handler = logging.StreamHandler(out)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processor=structlog.processors.JSONRenderer(),
            foreign_pre_chain=[structlog.stdlib.add_logger_name, *shared],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # uvicorn's own dictConfig (run by any server started with its defaults) disables existing
    # loggers and gives its own loggers private handlers; route them back through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        server_logger = logging.getLogger(name)
        server_logger.handlers.clear()
        server_logger.propagate = True
        server_logger.disabled = False
    # httpx logs full request URLs at INFO; keep them at WARNING so query strings stay out of logs.
    logging.getLogger("httpx").setLevel(logging.WARNING)


def get_logger(name: str | None = None) -> Any:
    return structlog.get_logger(name)
