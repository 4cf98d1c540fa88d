"""Helpers for the tail_sampling end-to-end tests (test_tail_sampling.py).

- `collector_probabilistic_sampled(...)`: the collector's `probabilistic` tail-sampling
  policy (FNV-1a 64 over salt + trace id, compared with MaxUint64 * ratio), to know which
  trace ids that policy keeps.
- `build_traces(...)`: traces of N spans with known ids, kinds (error / slow / normal),
  attributes and services, as opentelemetry-proto `Span` messages.
- `pack_requests(...)`: (service, span) pairs -> encoded ExportTraceServiceRequests, spans
  grouped by service into ResourceSpans.
- `Sender`: sends encoded requests to sluice over gRPC or OTLP/HTTP protobuf.
- `received_by_trace(sink)`: what the sink got, as (service, span) per trace id.
- `tail_config(...)`: an otlp -> tail_sampling -> batch -> otlp pipeline as collector YAML.
"""

from __future__ import annotations

import os
import random
import time
from collections import defaultdict
from dataclasses import dataclass, field
from fractions import Fraction

import grpc
import requests
import yaml
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
STATUS_UNSET, STATUS_OK, STATUS_ERROR = 0, 1, 2
MS = 1_000_000  # nanoseconds

# ---- the collector's probabilistic policy --------------------------------------------------

COLLECTOR_DEFAULT_HASH_SALT = "default-hash-seed"
_FNV_OFFSET, _FNV_PRIME, _U64 = 0xCBF29CE484222325, 0x100000001B3, (1 << 64) - 1


def fnv1a_64(data: bytes) -> int:
    h = _FNV_OFFSET
    for b in data:
        h = ((h ^ b) * _FNV_PRIME) & _U64
    return h


def collector_probabilistic_sampled(trace_id: bytes, percentage: float,
                                    salt: str = COLLECTOR_DEFAULT_HASH_SALT) -> bool:
    """processor/tailsamplingprocessor/internal/sampling/probabilistic.go: sampled iff
    fnv64a(salt || trace_id) <= uint64(MaxUint64 * percentage/100)."""
    threshold = int(Fraction(_U64) * Fraction(percentage / 100))
    return fnv1a_64(salt.encode() + trace_id) <= threshold


# ---- building traces -----------------------------------------------------------------------

SERVICES = ("frontend", "checkout", "payments")


@dataclass
class TraceSpec:
    trace_id: bytes
    kind: str  # "error" | "slow" | "normal"
    spans: list = field(default_factory=list)  # [(service, trace_pb2.Span)]

    @property
    def span_ids(self) -> set:
        return {s.span_id for _, s in self.spans}


def _kv(span, key, value):
    kv = span.attributes.add()
    kv.key = key
    if isinstance(value, bool):
        kv.value.bool_value = value
    elif isinstance(value, int):
        kv.value.int_value = value
    elif isinstance(value, float):
        kv.value.double_value = value
    else:
        kv.value.string_value = value


def make_span(rng: random.Random, trace_id: bytes, span_id: bytes, parent: bytes, name: str,
              start_ns: int, end_ns: int, status: int = STATUS_UNSET, kind: int = 1) -> trace_pb2.Span:
    span = trace_pb2.Span(trace_id=trace_id, span_id=span_id, parent_span_id=parent, name=name, kind=kind,
                          start_time_unix_nano=start_ns, end_time_unix_nano=end_ns)
    span.status.code = status
    if status == STATUS_ERROR:
        span.status.message = "upstream failed"
    _kv(span, "http.request.method", rng.choice(["GET", "POST"]))
    _kv(span, "http.response.status_code", 500 if status == STATUS_ERROR else 200)
    _kv(span, "user.id", f"user-{rng.randrange(10**6)}")
    _kv(span, "cache.hit", rng.random() < 0.5)
    _kv(span, "payload.ratio", rng.random())
    return span


def build_trace(rng: random.Random, kind: str, n_spans: int, base_ns: int, trace_id: bytes | None = None) -> TraceSpec:
    """One trace: a root of ~50 ms (2 s when slow) and children inside it; an error trace has
    its ERROR status on a non-root span. Root and children spread over the services."""
    trace_id = trace_id or rng.randbytes(16)
    t = TraceSpec(trace_id, kind)
    root_id = rng.randbytes(8)
    start = base_ns + rng.randrange(0, 500) * MS
    root_dur = 2000 * MS if kind == "slow" else rng.randrange(40, 60) * MS
    t.spans.append((SERVICES[0], make_span(rng, trace_id, root_id, b"", "GET /checkout", start, start + root_dur,
                                           STATUS_OK if rng.random() < 0.5 else STATUS_UNSET, kind=2)))
    error_at = rng.randrange(1, n_spans) if kind == "error" else -1
    for i in range(1, n_spans):
        child_start = start + rng.randrange(1, 10) * MS
        child_end = min(child_start + rng.randrange(5, 30) * MS, start + root_dur)
        status = STATUS_ERROR if i == error_at else rng.choice([STATUS_UNSET, STATUS_OK])
        t.spans.append((SERVICES[i % len(SERVICES)],
                        make_span(rng, trace_id, rng.randbytes(8), root_id, f"step-{i}", child_start, child_end,
                                  status, kind=3)))
    return t


def build_traces(rng: random.Random, n_traces: int, n_spans: int, n_error: int, n_slow: int,
                 base_ns: int) -> list[TraceSpec]:
    kinds = ["error"] * n_error + ["slow"] * n_slow + ["normal"] * (n_traces - n_error - n_slow)
    rng.shuffle(kinds)
    traces = [build_trace(rng, kind, n_spans, base_ns) for kind in kinds]
    assert len({t.trace_id for t in traces}) == n_traces
    return traces


def interleave(traces: list[TraceSpec], n_requests: int, window: int, rng: random.Random) -> list[list]:
    """Spreads every trace's spans over `window` consecutive requests starting at a random one,
    each span in a random request of that window (at least two distinct ones), and shuffles
    every request: all traces interleave, each trace arrives in pieces and out of order, and
    the time from a trace's first span to its last is about window/n_requests of the total."""
    requests_ = [[] for _ in range(n_requests)]
    for t in traces:
        start = rng.randrange(0, n_requests - window + 1)
        while True:
            slots = [start + rng.randrange(window) for _ in t.spans]
            if len(set(slots)) > 1:
                break
        for slot, item in zip(slots, t.spans):
            requests_[slot].append(item)
    for r in requests_:
        rng.shuffle(r)
    return requests_


def encode_request(items) -> bytes:
    """(service, span) pairs -> one encoded request with one ResourceSpans per service."""
    return pack_requests(items, max(len(items), 1))[0]


def pack_requests(items, per_request: int) -> list[bytes]:
    """(service, span) pairs, in order, `per_request` at a time -> encoded requests with one
    ResourceSpans per service."""
    out = []
    for i in range(0, len(items), per_request):
        req = trace_service_pb2.ExportTraceServiceRequest()
        scopes = {}
        for service, span in items[i:i + per_request]:
            if service not in scopes:
                rs = req.resource_spans.add()
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = "service.name", service
                kv = rs.resource.attributes.add()
                kv.key, kv.value.string_value = "deployment.environment", "e2e"
                ss = rs.scope_spans.add()
                ss.scope.name, ss.scope.version = "tail-e2e", "1.0"
                scopes[service] = ss
            scopes[service].spans.append(span)
        out.append(req.SerializeToString())
    return out


# ---- sending ---------------------------------------------------------------------------------

class Sender:
    """One gRPC channel and one HTTP session to sluice; `send(body, transport)` raises unless
    the request is accepted."""

    def __init__(self, grpc_port: int, http_port: int):
        self._channel = grpc.insecure_channel(f"127.0.0.1:{grpc_port}")
        self._call = self._channel.unary_unary(TRACE_METHOD, request_serializer=None, response_deserializer=None)
        self._http = requests.Session()
        self._url = f"http://127.0.0.1:{http_port}/v1/traces"

    def send(self, body: bytes, transport: str = "grpc", timeout: float = 10) -> None:
        if transport == "grpc":
            self._call(body, timeout=timeout)
        else:
            r = self._http.post(self._url, data=body, headers={"Content-Type": "application/x-protobuf"},
                                timeout=timeout)
            if r.status_code != 200:
                raise AssertionError(f"OTLP/HTTP export answered {r.status_code}: {r.content[:300]!r}")

    def close(self):
        self._channel.close()
        self._http.close()

    def __enter__(self) -> "Sender":
        return self

    def __exit__(self, *exc):
        self.close()


# ---- what arrived ------------------------------------------------------------------------------

def received_by_trace(sink) -> dict:
    """{trace_id: [(service.name, Span), ...]} of every span the sink accepted."""
    out = defaultdict(list)
    with sink._cond:
        for req in sink.traces:
            for rs in req.resource_spans:
                service = next((kv.value.string_value for kv in rs.resource.attributes if kv.key == "service.name"),
                               None)
                for ss in rs.scope_spans:
                    for span in ss.spans:
                        out[span.trace_id].append((service, span))
    return out


# ---- config -------------------------------------------------------------------------------------

STANDARD_POLICIES = [
    {"name": "errors", "type": "status_code", "status_code": {"status_codes": ["ERROR"]}},
    {"name": "slow", "type": "latency", "latency": {"threshold_ms": 1000}},
    {"name": "rest", "type": "probabilistic", "probabilistic": {"sampling_percentage": 10}},
]


def tail_config(ports, sink_endpoint: str, tail_sampling: dict, batch_timeout: str = "200ms",
                exporter_extra: dict | None = None) -> str:
    config = {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{ports.grpc}"},
            "http": {"endpoint": f"127.0.0.1:{ports.http}"},
        }}},
        "processors": {"tail_sampling": tail_sampling, "batch": {"timeout": batch_timeout}},
        "exporters": {"otlp": {"endpoint": sink_endpoint, "tls": {"insecure": True}, **(exporter_extra or {})}},
        "service": {
            "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling", "batch"],
                                     "exporters": ["otlp"]}},
            "telemetry": {"metrics": {"address": f"127.0.0.1:{ports.metrics}"}},
        },
    }
    return yaml.safe_dump(config, sort_keys=False)


# ---- bulky load for the memory test ---------------------------------------------------------------

def blob_request(rng: random.Random, traces: int, spans_per_trace: int, blob_bytes: int, error_ratio: float,
                 slow_ratio: float) -> tuple[bytes, dict]:
    """An encoded request of `traces` whole traces whose spans each carry `blob_bytes` random
    (incompressible) bytes, so pending spans cost about what they weigh on the wire. Returns
    the body and {trace_id: kind}."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", "bulk"
    ss = rs.scope_spans.add()
    ss.scope.name = "tail-e2e-bulk"
    now = time.time_ns()
    kinds = {}
    for _ in range(traces):
        tid, root = os.urandom(16), os.urandom(8)
        r = rng.random()
        kind = "error" if r < error_ratio else "slow" if r < error_ratio + slow_ratio else "normal"
        kinds[tid] = kind
        dur = 2000 * MS if kind == "slow" else 30 * MS
        for i in range(spans_per_trace):
            span = ss.spans.add(trace_id=tid, span_id=root if i == 0 else os.urandom(8),
                                parent_span_id=b"" if i == 0 else root, name=f"op-{i}",
                                start_time_unix_nano=now - dur, end_time_unix_nano=now if i == 0 else now - dur + MS)
            if kind == "error" and i == spans_per_trace - 1:
                span.status.code = STATUS_ERROR
            a = span.attributes.add()
            a.key, a.value.bytes_value = "blob", os.urandom(blob_bytes)
    return req.SerializeToString(), kinds
