"""Log lines: one format for everything the server writes (its own loggers, uvicorn's, the driver's).

`configure(level, fmt)` installs one handler on the root logger, on standard error:
- `json` (LOG_FORMAT=json, or `auto` when standard error is not a terminal): one JSON object per line
  (python-json-logger's formatter over orjson),
  with `time` (ISO 8601, UTC), `level`, `logger`, `message`, `request_id` (inside a request) and whatever
  the line carries as `extra` (the access line: `method`, `route`, `status`, `duration_ms`, `actor`,
  `graphql_operation`, `graphql_type`, `refusal`); a traceback is one string field (`exc_info`).
- `text` (`auto` on a terminal): `LEVEL logger [request id]: message`, for a person reading along.

Secrets never reach a line: every line is passed through `redact` after formatting (text) or every
string value of the line's JSON object before encoding (json), whatever logger wrote it. It masks API key
secrets (`atk_…`), JWTs (`eyJ….….…`), `Bearer` credentials and the password of a MongoDB connection
string. This is the last line of defence, not the only one: the access line carries the route template,
never the raw path or query string, and uvicorn's own access log (which does) is turned off.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Callable
from typing import Any, Literal, TextIO

from asgi_correlation_id.log_filters import CorrelationIdFilter
from pythonjsonlogger.orjson import OrjsonFormatter

LogFormat = Literal["auto", "json", "text"]

#: The text format (the tests and operators grep `LEVEL logger [request id]: message`).
TEXT_FORMAT = "%(levelname)s %(name)s [%(correlation_id)s]: %(message)s"


#: What is masked, and with what. API key secrets are `atk_<key id>_<random>` (app/auth/keys.py): the
#: public key id is kept, so a line still says which key it was about.
def _mask_key(secret: str) -> str:
    key = _KEY.fullmatch(secret)
    return f"atk_{key.group(1)}_[REDACTED]" if key is not None else "atk_[REDACTED]"


_KEY = re.compile(r"atk_([0-9a-f]{1,32})_.+")
_SECRETS: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...] = (
    (re.compile(r"atk_[A-Za-z0-9_\-]+"), lambda m: _mask_key(m.group())),
    (re.compile(r"eyJ[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*\.[A-Za-z0-9_\-]*"), "[REDACTED JWT]"),
    (re.compile(r"(?i)(bearer\s+)(?!\[REDACTED)[^\s\"',;]+"), r"\1[REDACTED]"),
    (re.compile(r"(mongodb(?:\+srv)?://[^:/@\s\"']*:)[^@\s]*@"), r"\1[REDACTED]@"),
)

#: Record attributes that are never fields of their own (uvicorn's coloured copy of its message).
_DROPPED = ("color_message",)


def redact(text: str) -> str:
    """`text` with every secret `_SECRETS` recognises masked."""
    if "atk_" not in text and "eyJ" not in text and "://" not in text and "earer" not in text:
        return text  # the common case: nothing that could match, no regex run
    for pattern, replacement in _SECRETS:
        text = pattern.sub(replacement, text)
    return text


def _redacted(value: Any) -> Any:
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: _redacted(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_redacted(item) for item in value]
    return value


class TextLines(logging.Formatter):
    """The text format, redacted (the traceback included)."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonLines(OrjsonFormatter):
    """One JSON object per line: `time`, `level`, `logger`, `message`, `request_id`, extras; redacted."""

    def __init__(self) -> None:
        super().__init__(
            "{levelname}{name}{message}",
            style="{",
            rename_fields={"levelname": "level", "name": "logger", "timestamp": "time"},
            timestamp=True,
        )

    def process_log_record(self, log_data: dict[str, Any]) -> dict[str, Any]:
        request_id = log_data.pop("correlation_id", None)
        if request_id not in (None, "-"):
            log_data["request_id"] = request_id
        for name in _DROPPED:
            log_data.pop(name, None)
        time = log_data.pop("time", None)
        ordered = {"time": time.isoformat(timespec="milliseconds") if time is not None else None}
        for key, value in log_data.items():
            # Strings are most values: redacted in place here, the rest (numbers, None) as they are.
            ordered[key] = redact(value) if type(value) is str else _redacted(value)
        return ordered


def use_json(fmt: LogFormat, stream: TextIO) -> bool:
    """Whether lines are JSON: asked for, or `auto` and `stream` is not a terminal (a process manager,
    a container runtime or a file collects them)."""
    if fmt == "auto":
        isatty = getattr(stream, "isatty", None)
        return not (isatty is not None and isatty())
    return fmt == "json"


def configure(level: str, fmt: LogFormat = "auto", stream: TextIO | None = None) -> bool:
    """Send every logger's lines to `stream` (standard error) in one format at `level`; returns whether
    it is JSON. Replaces handlers installed before (a second call, as the tests make, does not double
    lines). uvicorn's loggers propagate here (`uvicorn_log_config`)."""
    stream = stream or sys.stderr
    json_lines = use_json(fmt, stream)
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonLines() if json_lines else TextLines(TEXT_FORMAT))
    # Every line says which request it is about (`-` outside one): asgi-correlation-id's context.
    handler.addFilter(CorrelationIdFilter(default_value="-"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    global _json_lines
    _json_lines = json_lines
    return json_lines


#: Whether `configure` chose JSON lines (read by `announce`).
_json_lines = False


def announce(message: str) -> None:
    """A start-up line for the operator (where the server listens, its access mode): `agent-tasks: …` on
    standard error in text, a JSON line (logger `agent_tasks.startup`, INFO) when lines are JSON, so a log
    collector parses every line. Shown whatever LOG_LEVEL, as uvicorn's own start-up lines are not."""
    if _json_lines:
        startup = logging.getLogger("agent_tasks.startup")
        startup.handle(startup.makeRecord(startup.name, logging.INFO, __file__, 0, message, (), None))
    else:
        print(f"agent-tasks: {message}", file=sys.stderr, flush=True)


def uvicorn_log_config() -> dict[str, Any]:
    """uvicorn's `log_config`: its loggers keep no handler of their own and pass their lines to the root
    logger's (so they share the format and the redaction); its access logger is silenced, since the
    edge's access line (`app/edge.py`) says the same with the route template and the request id."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "loggers": {
            "uvicorn": {"handlers": [], "propagate": True},
            "uvicorn.error": {"handlers": [], "propagate": True},
            "uvicorn.access": {"handlers": [], "propagate": False, "level": "CRITICAL"},
        },
    }
