"""The test OTLP receiver (tests/fixtures/otlp.py) against the real OpenTelemetry SDK exporter."""

from __future__ import annotations

import asyncio

import pytest
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from tests.fixtures import otlp
from tests.fixtures.otlp import OtlpReceiver, ReceivedSpan, span_tree

# Not in tests/conftest.py's pytest_plugins; bound here under the fixture's name so pytest finds it.
otlp_receiver = otlp.otlp_receiver


def _provider(receiver: OtlpReceiver) -> TracerProvider:
    # A provider of the test's own, never the global one, so nothing leaks into other tests.
    provider = TracerProvider(resource=Resource.create({"service.name": "probe", "service.version": "1.2.3"}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=receiver.endpoint, insecure=True)))
    return provider


async def test_spans_from_the_sdk_exporter_arrive_as_sent(otlp_receiver: OtlpReceiver):
    provider = _provider(otlp_receiver)
    tracer = provider.get_tracer("tests.meshkit.test_otlp_receiver")

    def record() -> None:
        # SimpleSpanProcessor exports inside span.end(), a blocking gRPC call: on the event loop's
        # thread it would block the very loop the receiver answers on, until the export times out.
        upstream = tracer.start_span("upstream")
        upstream.end()
        with tracer.start_as_current_span("handle", kind=SpanKind.SERVER):
            with tracer.start_as_current_span(
                "lookup",
                kind=SpanKind.CLIENT,
                links=[Link(upstream.get_span_context())],
                attributes={"db.system": "sqlite", "rows": 3, "score": 0.5, "cached": False,
                            "tags": ["a", "b"]},
            ) as lookup:
                lookup.add_event("cache.miss")
            with tracer.start_as_current_span("fail") as fail:
                fail.set_status(Status(StatusCode.ERROR, "boom"))

    try:
        await asyncio.to_thread(record)
        spans = await otlp_receiver.wait_for(
            lambda spans: {span.name: span for span in spans} if len(spans) == 4 else None)
    finally:
        await asyncio.to_thread(provider.shutdown)

    handle, lookup, fail, upstream = spans["handle"], spans["lookup"], spans["fail"], spans["upstream"]
    assert handle.parent_span_id == "" and handle.kind == "SERVER"
    assert lookup.parent_span_id == handle.span_id and lookup.trace_id == handle.trace_id
    assert fail.parent_span_id == handle.span_id and fail.kind == "INTERNAL"
    assert lookup.kind == "CLIENT"
    assert len(handle.trace_id) == 32 and len(handle.span_id) == 16
    assert handle.trace_id == handle.trace_id.lower()
    assert upstream.trace_id != handle.trace_id

    assert lookup.attributes == {"db.system": "sqlite", "rows": 3, "score": 0.5, "cached": False, "tags": ["a", "b"]}
    assert lookup.links == [(upstream.trace_id, upstream.span_id)]
    assert lookup.events == ["cache.miss"]
    assert {(span.service, span.service_version) for span in spans.values()} == {("probe", "1.2.3")}
    assert fail.status_code == "STATUS_CODE_ERROR"
    assert handle.status_code == lookup.status_code == "STATUS_CODE_UNSET"
    assert handle.start_ns <= lookup.start_ns <= lookup.end_ns <= handle.end_ns

    assert {span.name for span in otlp_receiver.trace(handle.trace_id)} == {"handle", "lookup", "fail"}
    tree = span_tree(otlp_receiver.trace(handle.trace_id)).splitlines()
    assert [line.split("  [")[0] for line in tree] == ["handle", "  lookup", "  fail"]
    assert tree[0].startswith("handle  [probe]  ") and tree[0].endswith(" ms")


async def test_it_serves_as_a_context_manager_and_stops():
    async with OtlpReceiver() as receiver:
        assert receiver.endpoint.startswith("http://127.0.0.1:")
        assert receiver.spans == []
    with pytest.raises(AssertionError, match="not started"):
        receiver.endpoint


async def test_a_timeout_says_what_did_arrive(otlp_receiver: OtlpReceiver):
    provider = _provider(otlp_receiver)
    tracer = provider.get_tracer("tests.meshkit.test_otlp_receiver")
    try:
        await asyncio.to_thread(lambda: tracer.start_span("lonely", kind=SpanKind.SERVER).end())
        trace_id = (await otlp_receiver.wait_for(lambda spans: spans))[0].trace_id
        with pytest.raises(AssertionError) as failure:
            await otlp_receiver.wait_for(lambda spans: any(span.name == "never" for span in spans), timeout=0.2)
    finally:
        await asyncio.to_thread(provider.shutdown)
    message = str(failure.value)
    assert "within 0.2 s" in message
    assert f"trace {trace_id[:8]}:" in message
    assert "lonely  [probe]" in message


def _span(name: str, span_id: str, parent: str = "", start: int = 0, end: int = 1_000_000) -> ReceivedSpan:
    return ReceivedSpan("ab" * 16, span_id, parent, name, "INTERNAL", "svc", "", start_ns=start, end_ns=end)


def test_span_tree_orders_children_by_start_and_flags_a_missing_parent():
    spans = [
        _span("root", "01" * 8, end=12_345_678),
        _span("second", "03" * 8, "01" * 8, start=2_000),
        _span("first", "02" * 8, "01" * 8, start=1_000),
        _span("grandchild", "04" * 8, "02" * 8, start=1_500),
        _span("orphan", "05" * 8, "ff" * 8, start=5_000),
    ]
    assert span_tree(spans).splitlines() == [
        "root  [svc]  12.3 ms",
        "  first  [svc]  1.0 ms",
        "    grandchild  [svc]  1.0 ms",
        "  second  [svc]  1.0 ms",
        f"orphan  [svc]  1.0 ms  (parent {'ff' * 8} not received)",
    ]
