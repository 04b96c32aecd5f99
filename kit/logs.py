"""Structured logs: one JSON object a line, with the record's `extra` fields, phone numbers masked."""

from __future__ import annotations

import json
import logging
import sys
import re
from datetime import UTC, datetime
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

_PHONE = re.compile(r"(?<!\d)(1[3-9]\d)\d{4}(\d{4})(?!\d)")
_STANDARD = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime", "taskName"}


def mask_phones(text: str) -> str:
    return _PHONE.sub(r"\1****\2", text)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return mask_phones(json.dumps(entry, ensure_ascii=False, default=str))


class _Stderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever sys.stderr is at the time (a test harness swaps and closes it)."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


class ClientFaults(logging.Filter):
    """aiohttp logs a request it cannot parse (the client's fault, answered 400) as an error with
    a traceback: here it becomes a warning of one line, as every other refused request is, so that
    a flood of them reads as what it is and no alert on errors fires for it."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        if isinstance(error, HttpProcessingError):
            reason = str(error.message).strip().splitlines()[0] if error.message else type(error).__name__
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "malformed HTTP request refused (%s): %s", (error.code, reason)
            record.exc_info, record.exc_text = None, None
        return True


def quiet_client_faults() -> None:
    """Install ClientFaults on aiohttp's server logger (once)."""
    server = logging.getLogger("aiohttp.server")
    if not any(isinstance(f, ClientFaults) for f in server.filters):
        server.addFilter(ClientFaults())


def setup_logging(level: int = logging.INFO) -> None:
    handler = _Stderr()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Alembic and APScheduler chatter at INFO; keep their warnings.
    for noisy in ("alembic", "apscheduler"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    quiet_client_faults()
