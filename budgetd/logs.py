"""budgetd's logs: structlog in front of the stdlib `logging` module, so budgetd's own records and
those of pysyncobj and aiohttp leave through one formatter — JSON lines (``json``, for `budgetd
run`) or aligned console lines (``console``, for `budgetd dev`), on stderr.

Imports structlog and the stdlib only. Code elsewhere logs with the stdlib (``logging.getLogger``),
passing fields as ``extra={...}``; an event is a short snake_case word (``became_leader``) and its
fields are keys of the JSON object. Context bound with ``structlog.contextvars`` (the API binds
each request's ``request_id``) appears on every record logged while it is bound.
"""

from __future__ import annotations

import logging
import sys
from typing import Final

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

__all__ = ["FORMATS", "configure"]

FORMATS: Final = ("json", "console")


def _node_id_adder(node_id: str | None) -> Processor:
    def add_node_id(_logger: WrappedLogger, _method: str, event_dict: EventDict) -> EventDict:
        if node_id is not None:
            event_dict.setdefault("node_id", node_id)
        return event_dict

    return add_node_id


def configure(*, log_format: str, level: str = "info", node_id: str | None = None) -> None:
    """Route every log record of the process through structlog's formatter to stderr."""
    if log_format not in FORMATS:
        raise ValueError(f"log format {log_format!r} is not one of {', '.join(FORMATS)}")
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.stdlib.ExtraAdder(),
        _node_id_adder(node_id),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    renderer: Processor
    if log_format == "json":
        renderer = structlog.processors.JSONRenderer(sort_keys=False)
        tail: list[Processor] = [structlog.processors.dict_tracebacks]
    else:
        renderer = structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        tail = []
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared,
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            *tail,
            renderer,
        ],
    )
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
