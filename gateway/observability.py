"""What the gateway records of each HTTP request: the trace's server span,
the request's metrics by route template, and one log line.

The gateway is the edge, so each request starts a trace of its own, sampled
by this process's sampler (OTEL_TRACES_SAMPLER): a client's `traceparent`
neither forces a trace (its sampled flag would make every service record
every call it sends) nor switches one off, and it cannot pick the trace id a
ratio sampler decides by. The client's span becomes a link of the gateway's,
so its trace is still found from ours.
"""

from __future__ import annotations

import logging
import time
from contextlib import ExitStack

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from prometheus_client import Counter, Histogram
from starlette.requests import Request
from starlette.responses import Response

from meshkit.metrics import LATENCY_BUCKETS

log = logging.getLogger("gateway.http")
tracer = trace.get_tracer("sagemesh.gateway")

HTTP_REQUESTS = Counter("http_server_requests_total", "HTTP requests answered, by route template and status.",
                        ["method", "route", "status"])
HTTP_REQUEST_SECONDS = Histogram("http_server_request_duration_seconds",
                                 "Time to answer an HTTP request (to the end of a streamed body).",
                                 ["method", "route"], buckets=LATENCY_BUCKETS)
# A path no route matched is counted under one label, whatever it was.
UNMATCHED = "unmatched"


class RequestObservation:
    """Around one request: `with RequestObservation(request, traced=...) as seen:`,
    then `seen.route_matched(template)` and `seen.answered(response)`."""

    def __init__(self, request: Request, traced: bool) -> None:
        self.request = request
        self.traced = traced
        self.route = UNMATCHED
        self.status = 500
        self.span: trace.Span = trace.INVALID_SPAN
        self._exit = ExitStack()

    def __enter__(self) -> RequestObservation:
        self.started = time.perf_counter()
        if self.traced:
            method = self.request.method
            client = trace.get_current_span(propagate.extract(self.request.headers)).get_span_context()
            self.span = self._exit.enter_context(tracer.start_as_current_span(
                # An empty context: a root, whatever the request carried (baggage included).
                method, context=Context(), kind=SpanKind.SERVER,
                links=[Link(client)] if client.is_valid else [],
                attributes={"http.request.method": method, "url.path": self.request.url.path,
                            "url.scheme": self.request.url.scheme,
                            "user_agent.original": self.request.headers.get("user-agent", "")},
            ))
        return self

    def route_matched(self, template: str) -> None:
        self.route = template
        self.span.update_name(f"{self.request.method} {template}")
        self.span.set_attribute("http.route", template)

    def answered(self, response: Response) -> None:
        """Notes the status and hands the client the trace id, to quote to an operator."""
        self.status = response.status_code
        self.span.set_attribute("http.response.status_code", self.status)
        if self.status >= 500:
            self.span.set_status(Status(StatusCode.ERROR))
        context = self.span.get_span_context()
        if context.is_valid:
            response.headers["x-trace-id"] = format(context.trace_id, "032x")

    def __exit__(self, *exc_info) -> None:
        seconds = time.perf_counter() - self.started
        method = self.request.method
        HTTP_REQUESTS.labels(method, self.route, str(self.status)).inc()
        HTTP_REQUEST_SECONDS.labels(method, self.route).observe(seconds)
        # Probes and docs pages come every few seconds: logged at DEBUG only.
        log.log(logging.INFO if self.traced else logging.DEBUG, "http",
                extra={"method": method, "route": self.route, "status": self.status,
                       "duration_ms": round(seconds * 1000, 2)})
        self._exit.__exit__(*exc_info)
