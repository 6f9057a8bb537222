"""One JSON object per line, carrying the service name, the request id and
the trace and span ids (empty when tracing is off)."""

from __future__ import annotations

import logging
import sys

from pythonjsonlogger.json import JsonFormatter

from opentelemetry import trace

from meshkit import context


class _RequestContextFilter(logging.Filter):
    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = context.request_id.get()
        span = trace.get_current_span().get_span_context()
        record.trace_id = format(span.trace_id, "032x") if span.is_valid else ""
        record.span_id = format(span.span_id, "016x") if span.is_valid else ""
        return True


def configure_logging(service: str, level: str = "INFO", fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_RequestContextFilter(service))
    if fmt == "json":
        handler.setFormatter(
            JsonFormatter(
                "{levelname}{service}{name}{message}{request_id}{trace_id}{span_id}",
                style="{",
                rename_fields={"levelname": "level", "name": "logger"},
                # ISO 8601 in UTC, first in each line.
                timestamp="time",
            )
        )
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(service)s %(name)s %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
