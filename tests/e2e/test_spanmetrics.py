"""SLIs that survive sampling: span metrics from every span, before tail sampling, end to end.

sluice runs the shipped `configs/spanmetrics.yaml` (merged with an override that puts it on
loopback ports and shortens the flush and decision intervals). A service instrumented with the
OpenTelemetry Python SDK sends 3,000 traces at a steady 150 traces/s: a SERVER span
`GET /cart` with a known latency (a fixed cycle of values, 1% of traces slower than 1 s) and
`model_version`/`http.route` attributes, and a CLIENT child. 1% of the server spans are errors.
The `traces/spanmetrics` pipeline feeds the `spanmetrics` connector, whose metrics go through
`cardinality` and `batch` to a real Prometheus by remote write; the `traces` pipeline tail-samples
(errors, slow, 10% of the rest) to an OTLP sink.

Checked through Prometheus' HTTP API against the loader's ground truth: the calls total per
span, the error ratio, `rate()` during the load, and `histogram_quantile(0.95, ...)` (in the same
bucket as the true p95) — while only ~12% of traces reached the trace backend, every error and
slow trace among them. Series carry the collector's label names; Prometheus logged no
out-of-order or duplicate samples. A missing peer fails the test, never skips it.
"""

from __future__ import annotations

import math
import time

import requests
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind, Status, StatusCode

from conftest import REPO_ROOT
from peers import HOST, Proc, free_port
from tail_helpers import received_by_trace
from test_prometheus import BAD_LOG_PATTERNS, peer_binary, query, scalar, wait_until

TRACES = 3000
RATE = 150.0  # traces per second
# Server-span latencies in ms, cycled; every 100th trace (offset 50) takes 1500 ms instead.
LATENCIES = (8, 12, 15, 20, 22, 30, 35, 40, 45, 55, 60, 65, 80, 90, 110, 130, 170, 240, 280, 420)
SLOW_MS = 1500
# configs/spanmetrics.yaml's explicit buckets, in ms.
BUCKETS = (5, 10, 25, 50, 75, 100, 150, 200, 300, 500, 750, 1000, 2000, 5000)
CALLS = "traces_span_metrics_calls_total"
DURATION = "traces_span_metrics_duration_milliseconds_bucket"


def latency_ms(i: int) -> int:
    return SLOW_MS if i % 100 == 50 else LATENCIES[i % len(LATENCIES)]


def is_error(i: int) -> bool:
    return i % 100 == 7


OVERRIDE = """
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: {host}:{grpc}
      http:
        endpoint: {host}:{http}
connectors:
  spanmetrics:
    metrics_flush_interval: 1s
processors:
  tail_sampling:
    decision_wait: 2s
  cardinality:
    flush_interval: 1s
extensions:
  health_check:
    endpoint: {host}:{health}
service:
  telemetry:
    metrics:
      address: {host}:{metrics}
"""


def send_load(grpc_port: int) -> tuple[float, float, dict]:
    """Sends the traces at RATE; returns (start, end) wall-clock seconds and the ground truth."""
    provider = TracerProvider(resource=Resource.create({"service.name": "checkout",
                                                        "service.instance.id": "checkout-1"}))
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{HOST}:{grpc_port}", insecure=True),
        schedule_delay_millis=100, max_export_batch_size=256, max_queue_size=100_000))
    tracer = provider.get_tracer("loader")
    truth = {"errors": set(), "slow": set(), "latencies": [], "sent_at": []}
    start = time.time()
    for i in range(TRACES):
        due = start + i / RATE
        pause = due - time.time()
        if pause > 0:
            time.sleep(pause)
        t0 = time.time_ns()
        truth["sent_at"].append(t0 / 1e9)
        ms = latency_ms(i)
        server = tracer.start_span("GET /cart", kind=SpanKind.SERVER, start_time=t0,
                                   attributes={"http.route": "/cart", "model_version": f"v{23 + i % 2}"})
        ctx = trace.set_span_in_context(server)
        child = tracer.start_span("SELECT cart", context=ctx, kind=SpanKind.CLIENT, start_time=t0)
        child.end(end_time=t0 + ms * 500_000)
        trace_id = server.get_span_context().trace_id.to_bytes(16, "big")
        if is_error(i):
            server.set_status(Status(StatusCode.ERROR, "boom"))
            truth["errors"].add(trace_id)
        if ms > 1000:
            truth["slow"].add(trace_id)
        server.end(end_time=t0 + ms * 1_000_000)
        truth["latencies"].append(ms)
    end = time.time()
    assert provider.force_flush(30_000)
    provider.shutdown()
    return start, end, truth


def bucket_of(value: float) -> tuple[float, float]:
    lower = 0.0
    for upper in BUCKETS:
        if value <= upper:
            return lower, upper
        lower = upper
    return lower, math.inf


def test_span_metrics_before_tail_sampling_match_the_load_in_prometheus(sluice_bin, sink, tmp_path):
    prometheus = peer_binary("prometheus")
    prom_port = free_port()
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    grpc, http, health, metrics = free_port(), free_port(), free_port(), free_port()
    override = tmp_path / "override.yaml"
    override.write_text(OVERRIDE.format(host=HOST, grpc=grpc, http=http, health=health, metrics=metrics))
    env = {
        "NO_COLOR": "1",
        "SLUICE_TRACES_ENDPOINT": sink.grpc_endpoint,
        "SLUICE_REMOTE_WRITE_ENDPOINT": f"http://{HOST}:{prom_port}/api/v1/write",
    }
    prom = Proc([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", "--web.enable-remote-write-receiver",
                 f"--web.listen-address={HOST}:{prom_port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                tmp_path / "prometheus.log", name="prometheus", ports=[prom_port], start_timeout=30)
    agent = Proc([sluice_bin, "--config", REPO_ROOT / "configs" / "spanmetrics.yaml", "--config", override],
                 tmp_path / "sluice.log", name="sluice", ports=[grpc, http], env=env)
    with prom, agent:
        logs = (agent, prom)
        start, end, truth = send_load(grpc)
        n_errors = len(truth["errors"])
        assert n_errors == TRACES // 100

        # Every span counted, per span name; the errors among them.
        get = f'{CALLS}{{span_name="GET /cart"}}'
        wait_until("all server spans counted",
                   lambda: scalar(prom_port, f"sum({get})") == TRACES, timeout=30, logs=logs)
        assert scalar(prom_port, f'sum({CALLS}{{span_name="SELECT cart"}})') == TRACES
        errors = scalar(prom_port, f'sum({CALLS}{{span_name="GET /cart",status_code="STATUS_CODE_ERROR"}})')
        assert errors == n_errors
        ratio = scalar(prom_port, f'sum({CALLS}{{span_name="GET /cart",status_code="STATUS_CODE_ERROR"}}) / sum({get})')
        assert ratio == n_errors / TRACES

        # rate() during the steady part of the load is the rate the loader actually sent at.
        mid = (start + end) / 2
        sent_rate = sum(1 for t in truth["sent_at"] if mid - 10 < t <= mid) / 10
        r = requests.get(f"http://{HOST}:{prom_port}/api/v1/query",
                         params={"query": f"sum(rate({get}[10s]))", "time": f"{mid:.3f}"}, timeout=5)
        result = r.json()["data"]["result"]
        assert result, f"no rate at {mid:.3f} (load {start:.3f}..{end:.3f}): {r.text}"
        rate = float(result[0]["value"][1])
        assert abs(rate - sent_rate) / sent_rate < 0.15, f"rate {rate:.1f}/s, loader sent {sent_rate:.1f}/s"

        # p95 of the server spans, from the histogram, lands in the true p95's bucket.
        latencies = sorted(truth["latencies"])
        true_p95 = latencies[math.ceil(0.95 * len(latencies)) - 1]
        p95 = scalar(prom_port, f'histogram_quantile(0.95, sum by (le) ({DURATION}{{span_name="GET /cart"}}))')
        lower, upper = bucket_of(true_p95)
        assert lower <= p95 <= upper, f"p95 {p95} ms, true {true_p95} ms in ({lower}, {upper}]"
        total_ms = scalar(prom_port, 'sum(traces_span_metrics_duration_milliseconds_sum{span_name="GET /cart"})')
        assert abs(total_ms - sum(latencies)) < 1e-6 * sum(latencies)

        # The collector's label names, the configured dimensions, job/instance from the resource.
        series = query(prom_port, f'{get}')
        labels = series[0]["metric"]
        for key, value in {"service_name": "checkout", "span_kind": "SPAN_KIND_SERVER",
                           "http_route": "/cart", "job": "checkout", "instance": "checkout-1"}.items():
            assert labels.get(key) == value, labels
        assert labels["status_code"] in ("STATUS_CODE_UNSET", "STATUS_CODE_ERROR"), labels
        assert len(labels.get("collector_instance_id", "")) == 36, labels
        versions = {s["metric"]["model_version"] for s in series}
        assert versions == {"v23", "v24"}, versions
        assert scalar(prom_port, 'count(target_info{job="checkout"})') == 1

        # The trace backend got ~12% of traces: every error and slow one, whole, and ~10% of the rest.
        wanted = truth["errors"] | truth["slow"]
        wait_until("every error and slow trace at the backend",
                   lambda: wanted <= set(received_by_trace(sink)), timeout=30, logs=logs)
        time.sleep(3)
        kept = received_by_trace(sink)
        for trace_id in wanted:
            assert len(kept[trace_id]) == 2, trace_id.hex()
        fraction = len(kept) / TRACES
        assert 0.08 <= fraction <= 0.17, f"{fraction:.1%} of traces reached the trace backend"
        print(f"span metrics: {TRACES} traces, {fraction:.1%} kept by tail sampling; rate {rate:.1f}/s; "
              f"p95 {p95:.1f} ms (true {true_p95} ms)")

    prom_log = prom.log_text()
    for pattern in BAD_LOG_PATTERNS:
        assert pattern not in prom_log, f"Prometheus logged {pattern!r}:\n{prom.describe(40)}"
