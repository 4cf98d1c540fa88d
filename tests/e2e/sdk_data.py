"""Telemetry produced once with the real OpenTelemetry Python SDK, kept in memory so
the exact same data can be exported several times (to the sink directly as a
reference, then through sluice) with the SDK's own OTLP exporters.
"""

from __future__ import annotations

import logging

from opentelemetry import trace
from opentelemetry._logs import SeverityNumber
from opentelemetry.sdk._logs import LoggerProvider
from opentelemetry.sdk._logs.export import InMemoryLogRecordExporter, SimpleLogRecordProcessor
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import AggregationTemporality, InMemoryMetricReader
from opentelemetry.sdk.metrics.view import (
    ExplicitBucketHistogramAggregation,
    ExponentialBucketHistogramAggregation,
    View,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags, TraceState

T0 = 1_700_000_000_000_000_000  # fixed timestamps so the data is fully deterministic once built

# One attribute of every value type the SDK accepts, edge values included.
ALL_TYPES = {
    "str": "plain ascii",
    "str.empty": "",
    "str.unicode": "héllo wörld ✓ 日本語 \U0001F680",
    "str.escapes": "quote\" backslash\\ newline\n tab\t nul\x00",
    "bool.true": True,
    "bool.false": False,
    "int.zero": 0,
    "int.neg": -42,
    "int.max": 2**63 - 1,
    "int.min": -(2**63),
    "double": 3.141592653589793,
    "double.neg.tiny": -5e-324,
    "double.huge": 1.7976931348623157e308,
    "double.inf": float("inf"),
    "bytes": b"\x00\x01\xfe\xff binary",
    "arr.str": ["a", "", "ünï"],
    "arr.bool": [True, False, True],
    "arr.int": [1, -1, 2**62],
    "arr.double": [0.5, -2.25, 1e-9],
    "arr.bytes": [b"\x00", b"\xff\xfe"],
}

RESOURCE_A = Resource(
    {"service.name": "fidelity-a", "service.version": "1.0.0", "host.name": "h1", **ALL_TYPES},
    schema_url="https://opentelemetry.io/schemas/1.21.0",
)
RESOURCE_B = Resource({"service.name": "fidelity-b", "deployment.environment": "test", "res.int": 7})

REMOTE_PARENT = SpanContext(
    trace_id=0x5B8EFFF798038103D269B633813FC60C, span_id=0xEEE19B7EC3C1B173, is_remote=True,
    trace_flags=TraceFlags(TraceFlags.SAMPLED),
    trace_state=TraceState([("rojo", "00f067aa0ba902b7"), ("congo", "t61rcWkgMzE")]),
)
LINKED = [
    SpanContext(trace_id=0x0AF7651916CD43DD8448EB211C80319C, span_id=0xB7AD6B7169203331, is_remote=True,
                trace_flags=TraceFlags(TraceFlags.SAMPLED), trace_state=TraceState([("vendor", "v1")])),
    SpanContext(trace_id=0x1, span_id=0x2, is_remote=False, trace_flags=TraceFlags(0)),
]


def build_spans(n_extra: int = 40):
    """Spans over 2 resources and 3 scopes: every kind, status, events, links, trace state,
    dropped counts, attributes of every type. Returns the SDK ReadableSpans."""
    logging.getLogger("opentelemetry.attributes").setLevel(logging.ERROR)  # "over the limits" is on purpose
    memory = InMemorySpanExporter()
    limits = SpanLimits(max_span_attributes=30, max_events=4, max_links=3, max_event_attributes=30,
                        max_link_attributes=30, max_attribute_length=None)
    providers = [TracerProvider(resource=RESOURCE_A, span_limits=limits),
                 TracerProvider(resource=RESOURCE_B, span_limits=limits)]
    for p in providers:
        p.add_span_processor(SimpleSpanProcessor(memory))
    tracers = [
        providers[0].get_tracer("fidelity.scope.one", "1.2.3", schema_url="https://example.com/scope/1",
                                attributes={"scope.str": "s", "scope.int": 9, "scope.arr": ["x", "y"]}),
        providers[0].get_tracer("fidelity.scope.two"),  # no version, no attributes
        providers[1].get_tracer("fidelity.scope.three", "0.0.1", attributes={"scope.bool": True}),
    ]
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    kinds = [SpanKind.INTERNAL, SpanKind.SERVER, SpanKind.CLIENT, SpanKind.PRODUCER, SpanKind.CONSUMER]

    t = tracers[0]
    # The rich span: remote parent with trace state, every attribute type, events, links, error status.
    span = t.start_span(
        "rich span ✓", context=parent_ctx, kind=SpanKind.SERVER, start_time=T0,
        attributes=ALL_TYPES,
        links=[Link(LINKED[0], {"link.str": "l", "link.int": 1, "link.arr": [1.5, 2.5]}), Link(LINKED[1])],
    )
    span.add_event("event.one", {"ev.str": "e", "ev.bytes": b"\x07", "ev.arr": [True]}, timestamp=T0 + 10)
    span.add_event("event.empty", timestamp=T0 + 20)
    span.add_event("exception", {"exception.type": "ValueError", "exception.message": "boom",
                                 "exception.stacktrace": "Traceback ...\n  line 1"}, timestamp=T0 + 30)
    span.set_status(Status(StatusCode.ERROR, "something failed: détails"))
    span.end(end_time=T0 + 1_000_000)

    # Limits exceeded: dropped attribute/event/link counts.
    span = t.start_span("over the limits", start_time=T0 + 1, kind=SpanKind.CLIENT,
                        attributes={f"attr.{i:02d}": i for i in range(35)},
                        links=[Link(LINKED[0]), Link(LINKED[1]), Link(LINKED[0]), Link(LINKED[1])])
    for i in range(6):
        span.add_event(f"ev{i}", {"i": i}, timestamp=T0 + 100 + i)
    span.set_status(Status(StatusCode.OK))
    span.end(end_time=T0 + 2_000_000)

    # A local parent/child pair (parent span id set, not remote).
    parent = t.start_span("local parent", start_time=T0 + 2, kind=SpanKind.PRODUCER)
    child = t.start_span("local child", context=trace.set_span_in_context(parent), start_time=T0 + 3,
                         kind=SpanKind.CONSUMER, attributes={"child": True})
    child.end(end_time=T0 + 4)
    parent.end(end_time=T0 + 5)

    # Many plain spans over the three scopes, every kind.
    for i in range(n_extra):
        tracer = tracers[i % 3]
        s = tracer.start_span(f"span-{i}", kind=kinds[i % 5], start_time=T0 + 1000 * i,
                              context=parent_ctx if i % 4 == 0 else None,
                              attributes={"i": i, "even": i % 2 == 0, "ratio": i / 7, "label": f"v{i}",
                                          "tags": ["t", str(i)]})
        if i % 3 == 0:
            s.add_event("tick", {"n": i}, timestamp=T0 + 1000 * i + 1)
        if i % 5 == 0:
            s.set_status(Status(StatusCode.ERROR, f"error {i}"))
        s.end(end_time=T0 + 1000 * i + 500)

    spans = memory.get_finished_spans()
    for p in providers:
        p.shutdown()
    return spans


def build_logs(n_extra: int = 30):
    """Log records over 2 resources and 2 scopes: bodies of every AnyValue kind, severities,
    trace context, attributes of every type, event names. Returns the SDK ReadableLogRecords."""
    memory = InMemoryLogRecordExporter()
    providers = [LoggerProvider(resource=RESOURCE_A), LoggerProvider(resource=RESOURCE_B)]
    for p in providers:
        p.add_log_record_processor(SimpleLogRecordProcessor(memory))
    loggers = [
        providers[0].get_logger("fidelity.logger", "4.5.6", schema_url="https://example.com/log-scope",
                                attributes={"logger.attr": "la", "logger.n": 3}),
        providers[1].get_logger("fidelity.logger.b"),
    ]
    span_ctx = trace.set_span_in_context(trace.NonRecordingSpan(REMOTE_PARENT))
    bodies = [
        "a plain string body",
        "unicode body ✓ 日本語 \U0001F680 with \"quotes\" and \\ and \n newline",
        "",
        {"map.key": "v", "nested": {"deep": [1, 2.5, True, None, b"\x00"]}, "n": -1},
        ["list", 1, 2.0, False, {"k": "v"}],
        b"\x00\xff raw bytes body",
        123456789012345,
        -0.25,
        True,
    ]
    severities = list(SeverityNumber)
    lg = loggers[0]
    lg.emit(timestamp=T0, observed_timestamp=T0 + 7, context=span_ctx, severity_number=SeverityNumber.ERROR,
            severity_text="ERROR", body="log with trace context", attributes=ALL_TYPES, event_name="fidelity.event")
    lg.emit(timestamp=T0 + 1, observed_timestamp=T0 + 8, severity_number=SeverityNumber.INFO,
            severity_text="Information", body={"structured": True},
            attributes={"map.attr": {"inner": "x", "n": 2}, "arr.mixed": ["a", 1, True]})
    for i, body in enumerate(bodies):
        loggers[i % 2].emit(timestamp=T0 + 100 + i, observed_timestamp=T0 + 200 + i,
                            severity_number=severities[(i * 3) % len(severities)], severity_text=f"SEV{i}",
                            body=body, attributes={"body.index": i})
    for i in range(n_extra):
        loggers[i % 2].emit(timestamp=T0 + 1000 + i, observed_timestamp=T0 + 2000 + i,
                            context=span_ctx if i % 3 == 0 else None,
                            severity_number=severities[i % len(severities)], severity_text=f"level-{i}",
                            body=f"log line {i}", attributes={"i": i, "even": i % 2 == 0})
    logs = memory.get_finished_logs()
    for p in providers:
        p.shutdown()
    return logs


def build_metrics(temporality: AggregationTemporality = AggregationTemporality.CUMULATIVE):
    """MetricsData with int and double sums (monotonic and not), observable gauges, explicit and
    exponential histograms (with exemplars from a sampled span), over 2 resources and 2 scopes."""
    from opentelemetry.metrics import Observation
    from opentelemetry.sdk.metrics import Counter, Histogram, UpDownCounter

    readers, datas = [], []
    views = [
        View(instrument_name="fidelity.latency", aggregation=ExplicitBucketHistogramAggregation(
            boundaries=[0.0, 5.0, 10.0, 25.0, 50.0, 100.0], record_min_max=True)),
        View(instrument_name="fidelity.exp*", aggregation=ExponentialBucketHistogramAggregation(max_size=40)),
    ]
    for resource in (RESOURCE_A, RESOURCE_B):
        reader = InMemoryMetricReader(preferred_temporality={
            Counter: temporality, UpDownCounter: AggregationTemporality.CUMULATIVE,
            Histogram: temporality})
        provider = MeterProvider(resource=resource, metric_readers=[reader], views=views)
        readers.append((reader, provider))
    tp = TracerProvider(resource=RESOURCE_A)
    tracer = tp.get_tracer("exemplar.tracer")

    for idx, (reader, provider) in enumerate(readers):
        meter = provider.get_meter("fidelity.meter", "7.8.9", schema_url="https://example.com/meter",
                                   attributes={"meter.attr": "m", "meter.idx": idx})
        other = provider.get_meter("fidelity.meter.other")
        counter = meter.create_counter("fidelity.requests", unit="{request}", description="requests served ✓")
        fcounter = meter.create_counter("fidelity.bytes", unit="By", description="double counter")
        updown = meter.create_up_down_counter("fidelity.queue", unit="{item}", description="queue depth")
        hist = meter.create_histogram("fidelity.latency", unit="ms", description="latency")
        exp = meter.create_histogram("fidelity.exp.size", unit="By", description="exponential histogram")
        other.create_observable_gauge(
            "fidelity.temperature", unit="Cel", description="observable gauge",
            callbacks=[lambda options: [Observation(21.5, {"room": "a"}), Observation(-3.25, {"room": "b"}),
                                        Observation(0.0, {"room": "c", "arr": ["x", "y"]})]])
        other.create_observable_gauge(
            "fidelity.int.gauge", callbacks=[lambda options: [Observation(2**40, {"k": "v"})]])
        other.create_observable_counter(
            "fidelity.observed.total", unit="s", callbacks=[lambda options: [Observation(12.5, {"cpu": "0"})]])
        with tracer.start_as_current_span("exemplar span"):  # sampled span: exemplars get trace context
            for i in range(50):
                attrs = {"route": f"/r{i % 3}", "ok": i % 4 != 0, "code": 200 + (i % 2) * 300}
                counter.add(i + 1, attrs)
                fcounter.add(i * 0.5 + 0.25, {"dir": "in" if i % 2 else "out"})
                updown.add(1 if i % 3 else -2, {"queue": f"q{i % 2}"})
                hist.record(i * 2.7, {"route": f"/r{i % 3}"})
                exp.record(abs(i - 20) * 13.37 + (1e-3 if i % 2 else 1e6), {"bucketed": "yes"})
                exp.record(0, {"bucketed": "yes"})
        datas.append(reader.get_metrics_data())
    tp.shutdown()
    for _, provider in readers:
        provider.shutdown()
    return datas
