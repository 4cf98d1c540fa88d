"""Robustness of sluice end to end: bad input, a backend that is down or slow, SIGTERM under
load, and the memory limiter.

Every test runs sluice on free loopback ports with its self-metrics on
`service.telemetry.metrics.address`, talks to it with real OTLP clients (grpcio, requests,
`sluice loadgen`) and checks what the in-process sink received. Nothing is skipped: a
missing peer or binary fails the test.
"""

from __future__ import annotations

import gzip
import json
import re
import signal
import time

import grpc
import pytest
import requests
import yaml
import zstandard
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

from peers import free_port
from robust_helpers import (MIB, GrpcBodySwapProxy, Loadgen, Metrics, RssSampler, TcpRelay, grpc_frame, gzip_bomb,
                            rss_kib, scrape, trace_request)
from sink import Sink

TRACE_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
PROTOBUF = {"Content-Type": "application/x-protobuf"}


# ---- config and clients ------------------------------------------------------------------

class Ports:
    def __init__(self):
        self.grpc, self.http, self.metrics = free_port(), free_port(), free_port()


def sluice_config(ports: Ports, *, exporters: dict, processors: dict | None = None,
                  grpc_settings: dict | None = None, http_settings: dict | None = None,
                  shutdown_timeout: str | None = None) -> str:
    """A traces pipeline otlp -> processors -> exporters, as collector YAML."""
    processors = processors if processors is not None else {"batch": {"timeout": "100ms"}}
    service = {
        "pipelines": {"traces": {"receivers": ["otlp"], "processors": list(processors),
                                 "exporters": list(exporters)}},
        "telemetry": {"metrics": {"address": f"127.0.0.1:{ports.metrics}"}},
    }
    if shutdown_timeout:
        service["shutdown_timeout"] = shutdown_timeout
    config = {
        "receivers": {"otlp": {"protocols": {
            "grpc": {"endpoint": f"127.0.0.1:{ports.grpc}", **(grpc_settings or {})},
            "http": {"endpoint": f"127.0.0.1:{ports.http}", **(http_settings or {})},
        }}},
        "processors": processors,
        "exporters": exporters,
        "service": service,
    }
    if not processors:
        del config["processors"]
    return yaml.safe_dump(config, sort_keys=False)


def otlp_exporter(endpoint: str, **extra) -> dict:
    return {"endpoint": endpoint, "tls": {"insecure": True}, **extra}


def grpc_export(port: int, body: bytes, *, timeout: float = 10, compression=None, with_trailers=False):
    """Sends `body` as the raw Export message; returns (StatusCode, details[, trailing metadata])."""
    with grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.max_send_message_length", -1)]) as ch:
        call = ch.unary_unary(TRACE_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(body, timeout=timeout, compression=compression)
            result = (grpc.StatusCode.OK, "", ())
        except grpc.RpcError as e:
            result = (e.code(), e.details() or "", e.trailing_metadata() or ())
    return result if with_trailers else result[:2]


def grpc_retry_delay(trailers) -> float | None:
    """The RetryInfo delay in a gRPC error's `grpc-status-details-bin`, if any."""
    for key, value in trailers:
        if key == "grpc-status-details-bin":
            st = status_pb2.Status.FromString(value)
            for detail in st.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None


def http_export(port: int, body, *, headers=None, timeout: float = 10) -> requests.Response:
    return requests.post(f"http://127.0.0.1:{port}/v1/traces", data=body, headers=headers or PROTOBUF,
                         timeout=timeout)


def http_error_message(resp: requests.Response) -> str:
    """The message of an OTLP/HTTP error body (a google.rpc.Status, protobuf or JSON)."""
    ctype = resp.headers.get("Content-Type", "")
    if "json" in ctype:
        return str(json.loads(resp.content).get("message", ""))
    if "protobuf" in ctype:
        st = status_pb2.Status()
        st.ParseFromString(resp.content)
        return st.message
    return resp.text


def alive(proc) -> bool:
    return proc.returncode is None


def unique_span_ids(spans) -> tuple[set, int]:
    ids = [s.span_id for s in spans]
    return set(ids), len(ids)


def spans_by_transport(sink: Sink) -> dict:
    """{"grpc": [span...], "http": [span...]} of accepted trace requests (the sink appends the
    request record and the decoded request together, so accepted records align with traces)."""
    with sink._cond:
        accepted = [r for r in sink.requests if r.signal == "traces" and r.status in (0, 200)]
        assert len(accepted) == len(sink.traces)
        out = {"grpc": [], "http": []}
        for rec, req in zip(accepted, sink.traces):
            out[rec.transport] += [s for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]
        return out


ANSI = re.compile(r"\x1b\[[0-9;]*m")


def final_summary(log_text: str) -> dict:
    """accepted/refused/sent/failed of the last "Summary" line sluice logs (it logs one after
    shutdown)."""
    lines = [ANSI.sub("", line) for line in log_text.splitlines() if "Summary" in line]
    assert lines, "sluice logged no Summary line"
    return {k: int(v) for k, v in re.findall(r"\b(accepted|refused|sent|failed)=(\d+)", lines[-1])}


# ---- 1. bad input ------------------------------------------------------------------------

RSS_LIMIT_MIB = 200
BOMB_BYTES = 1 << 30


@pytest.fixture(scope="module")
def bomb() -> bytes:
    """1 GiB of zeros, gzip-compressed (~1 MiB)."""
    data = gzip_bomb(BOMB_BYTES)
    assert len(data) < 1100 * 1024, len(data)
    return data


@pytest.fixture(scope="module")
def zstd_bomb() -> bytes:
    cctx = zstandard.ZstdCompressor(level=3)
    zeros = bytes(MIB)
    chunker = cctx.chunker(size=BOMB_BYTES, chunk_size=MIB)
    parts = []
    for _ in range(BOMB_BYTES // MIB):
        parts += list(chunker.compress(zeros))
    parts += list(chunker.finish())
    return b"".join(parts)


BODY_LIMIT = 2 * MIB  # max_request_body_size, and max_recv_msg_size_mib: 2


def bad_input_sluice(run_sluice, sink):
    ports = Ports()
    config = sluice_config(ports, exporters={"otlp": otlp_exporter(sink.grpc_endpoint)},
                           grpc_settings={"max_recv_msg_size_mib": 2},
                           http_settings={"max_request_body_size": BODY_LIMIT})
    return ports, run_sluice(config)


def oversized_request() -> bytes:
    body, _ = trace_request(1, 1)
    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
    req.resource_spans[0].scope_spans[0].spans[0].name = "x" * (3 * MIB)
    return req.SerializeToString()


def valid_request_still_served(proc, ports, sink, transport: str, first_id: int):
    """The process is alive, a valid request on `transport` succeeds and reaches the sink."""
    assert alive(proc), "sluice died:\n" + proc.describe()
    body, ids = trace_request(3, first_id)
    if transport == "grpc":
        code, details = grpc_export(ports.grpc, body)
        assert code == grpc.StatusCode.OK, f"valid request after bad input: {code} {details}"
    else:
        r = http_export(ports.http, body)
        assert r.status_code == 200, f"valid request after bad input: {r.status_code} {r.content!r}"
    assert sink.wait_for(lambda: set(ids) <= {s.span_id for s in sink.spans()}, 10), \
        "the valid request sent after the bad one never reached the backend"
    assert alive(proc), "sluice died:\n" + proc.describe()


HTTP_CASES = {
    # name: (body factory(bomb, zstd_bomb), headers, expected statuses)
    "garbage_protobuf": (lambda b, z: b"this is not protobuf \xff\xfe\x00\x01", PROTOBUF, {400}),
    "truncated_protobuf": (lambda b, z: trace_request(5, 10)[0][:-7], PROTOBUF, {400}),
    "invalid_json": (lambda b, z: b'{"resourceSpans": [{"scopeSpans": [', {"Content-Type": "application/json"}, {400}),
    "json_wrong_types": (lambda b, z: b'{"resourceSpans": 42}', {"Content-Type": "application/json"}, {400}),
    "oversized_body": (lambda b, z: oversized_request(), PROTOBUF, {413}),
    "oversized_chunked": (lambda b, z: iter([oversized_request()[i:i + 65536]
                                             for i in range(0, 3 * MIB + 100, 65536)]), PROTOBUF, {413}),
    "corrupt_gzip": (lambda b, z: b"\x1f\x8b\x08\x00garbage-after-a-gzip-magic",
                     {**PROTOBUF, "Content-Encoding": "gzip"}, {400}),
    "gzip_bomb": (lambda b, z: b, {**PROTOBUF, "Content-Encoding": "gzip"}, {400, 413}),
    "zstd_bomb": (lambda b, z: z, {**PROTOBUF, "Content-Encoding": "zstd"}, {400, 413}),
}


@pytest.mark.parametrize("case", list(HTTP_CASES))
def test_bad_input_http(run_sluice, sink, request, case):
    make_body, headers, expected = HTTP_CASES[case]
    needs_bomb = case.endswith("bomb")
    body = make_body(request.getfixturevalue("bomb") if case == "gzip_bomb" else None,
                     request.getfixturevalue("zstd_bomb") if case == "zstd_bomb" else None)
    ports, proc = bad_input_sluice(run_sluice, sink)
    with proc:
        valid_request_still_served(proc, ports, sink, "http", 1000)
        with RssSampler(proc.pid) as rss:
            r = http_export(ports.http, body, headers=headers, timeout=30)
            time.sleep(0.3)
        assert r.status_code in expected, f"{case}: HTTP {r.status_code} {r.content[:300]!r}"
        assert http_error_message(r).strip(), f"{case}: HTTP {r.status_code} without an error message"
        if r.status_code == 413 or needs_bomb:
            assert "size" in http_error_message(r) or r.status_code == 400
        valid_request_still_served(proc, ports, sink, "http", 2000)
        assert rss.max_mib < RSS_LIMIT_MIB, f"{case}: RSS peaked at {rss.max_mib:.0f} MiB"
        after = rss_kib(proc.pid) / 1024
        assert after < RSS_LIMIT_MIB, f"{case}: RSS {after:.0f} MiB after the request"
        m = scrape(ports.metrics)
        # only the two valid requests (3 spans each) were accepted; nothing of the bad one
        assert m.value("otelcol_receiver_accepted_spans_total", transport="http") == 6
        assert sink.span_count() == 6


GRPC_CASES = {
    "garbage_protobuf": (lambda: b"this is not protobuf \xff\xfe\x00\x01", {grpc.StatusCode.INVALID_ARGUMENT}),
    "truncated_protobuf": (lambda: trace_request(5, 10)[0][:-7], {grpc.StatusCode.INVALID_ARGUMENT}),
    "json_as_protobuf": (lambda: b'{"resourceSpans": [{"scopeSpans": [', {grpc.StatusCode.INVALID_ARGUMENT}),
    # Message larger than max_recv_msg_size_mib: RESOURCE_EXHAUSTED, as grpc-go (the collector)
    # answers "received message larger than max" -- a code OTLP clients do not blindly retry.
    "oversized_message": (oversized_request, {grpc.StatusCode.RESOURCE_EXHAUSTED}),
}


@pytest.mark.parametrize("case", list(GRPC_CASES))
def test_bad_input_grpc(run_sluice, sink, case):
    make_body, expected = GRPC_CASES[case]
    body = make_body()
    ports, proc = bad_input_sluice(run_sluice, sink)
    with proc:
        valid_request_still_served(proc, ports, sink, "grpc", 1000)
        with RssSampler(proc.pid) as rss:
            code, details = grpc_export(ports.grpc, body, timeout=30)
            time.sleep(0.3)
        assert code in expected, f"{case}: got {code} {details!r}, expected one of {expected}"
        assert details.strip(), f"{case}: {code} without a message"
        valid_request_still_served(proc, ports, sink, "grpc", 2000)
        assert rss.max_mib < RSS_LIMIT_MIB, f"{case}: RSS peaked at {rss.max_mib:.0f} MiB"
        m = scrape(ports.metrics)
        assert m.value("otelcol_receiver_accepted_spans_total", transport="grpc") == 6
        assert sink.span_count() == 6


def test_bad_input_grpc_gzip_bomb(run_sluice, sink, bomb):
    """A gRPC message flagged compressed with `grpc-encoding: gzip` whose payload inflates to
    1 GiB. grpcio sets the header and decodes the answer; a relay swaps the message bytes for
    the bomb on the wire. A valid gzip message through the same relay proves the path works."""
    ports, proc = bad_input_sluice(run_sluice, sink)
    with proc:
        # the relay delivers a real compressed message: it is accepted and arrives
        good, good_ids = trace_request(4, 500)
        with GrpcBodySwapProxy(ports.grpc, grpc_frame(gzip.compress(good), True)) as relay:
            code, details = grpc_export(relay.port, b"placeholder", compression=grpc.Compression.Gzip)
        assert code == grpc.StatusCode.OK, f"valid gzip message through the relay: {code} {details}"
        assert sink.wait_for(lambda: set(good_ids) <= {s.span_id for s in sink.spans()}, 10)

        frame = grpc_frame(bomb, True)
        with RssSampler(proc.pid, interval=0.005) as rss:
            with GrpcBodySwapProxy(ports.grpc, frame) as relay:
                code, details = grpc_export(relay.port, b"placeholder", compression=grpc.Compression.Gzip,
                                            timeout=30)
                swapped = relay.bytes_swapped
            time.sleep(0.5)
        assert swapped == len(frame), f"only {swapped} of {len(frame)} bomb bytes reached sluice"
        assert code in {grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.INVALID_ARGUMENT}, \
            f"gzip bomb: got {code} {details!r}"
        assert details.strip(), f"gzip bomb: {code} without a message"
        assert rss.max_mib < RSS_LIMIT_MIB, f"RSS peaked at {rss.max_mib:.0f} MiB during the bomb"
        valid_request_still_served(proc, ports, sink, "grpc", 2000)
        after = rss_kib(proc.pid) / 1024
        assert after < RSS_LIMIT_MIB, f"RSS {after:.0f} MiB after the bomb"
        m = scrape(ports.metrics)
        assert m.value("otelcol_receiver_accepted_spans_total", transport="grpc") == 4 + 3


# ---- 2. backend down at start ------------------------------------------------------------

DOWN_SECONDS = 20
RETRY = {"enabled": True, "initial_interval": "1s", "max_interval": "3s", "max_elapsed_time": "120s",
         "multiplier": 1.5}


def test_backend_down_for_20s_then_up_loses_and_duplicates_nothing(run_sluice, sink, tmp_path):
    """Four exporters: to a backend answering UNAVAILABLE / 503 for 20 s (otlp/refusing,
    otlphttp/refusing -> `sink`) and to ports where nothing listens for 20 s (otlp/down,
    otlphttp/down -> relays started late -> `late`). Every acknowledged span reaches each
    backend exactly once, after retries."""
    sink.fail_with(None, grpc.StatusCode.UNAVAILABLE, 503)
    late_grpc_port, late_http_port = free_port(), free_port()
    ports = Ports()
    exporters = {
        "otlp/refusing": otlp_exporter(sink.grpc_endpoint, retry_on_failure=RETRY),
        "otlphttp/refusing": {"endpoint": sink.http_endpoint, "retry_on_failure": RETRY},
        "otlp/down": otlp_exporter(f"127.0.0.1:{late_grpc_port}", retry_on_failure=RETRY),
        "otlphttp/down": {"endpoint": f"http://127.0.0.1:{late_http_port}", "retry_on_failure": RETRY},
    }
    config = sluice_config(ports, exporters=exporters,
                           processors={"batch": {"timeout": "200ms", "send_batch_size": 100}})
    relays = []
    with Sink() as late, run_sluice(config) as proc:
        started = time.monotonic()
        sent_ids = []
        next_id = 1
        for i in range(20):  # 20 requests x 50 spans, alternating receivers
            body, ids = trace_request(50, next_id)
            next_id += 50
            if i % 2:
                r = http_export(ports.http, body)
                assert r.status_code == 200, f"request {i}: HTTP {r.status_code} {r.content!r}"
            else:
                code, details = grpc_export(ports.grpc, body)
                assert code == grpc.StatusCode.OK, f"request {i}: {code} {details}"
            sent_ids += ids
        n = len(sent_ids)
        time.sleep(max(0.0, DOWN_SECONDS - (time.monotonic() - started)))
        assert sink.span_count() == 0 and late.span_count() == 0, "data arrived while the backends were down"
        failed_attempts = sum(1 for r in sink.requests if r.status not in (0, 200))
        assert failed_attempts > 0, "sluice never tried the refusing backend while it was down"

        sink.recover()
        relays = [TcpRelay(late_grpc_port, late.grpc_port).start(), TcpRelay(late_http_port, late.http_port).start()]
        try:
            def delivered():
                a, b = spans_by_transport(sink), spans_by_transport(late)
                return [len(a["grpc"]), len(a["http"]), len(b["grpc"]), len(b["http"])]

            deadline = time.monotonic() + 20
            while time.monotonic() < deadline and min(delivered()) < n:
                time.sleep(0.2)
            time.sleep(1.0)  # would-be duplicates get a moment to show up
            m = scrape(ports.metrics)
            by = {"otlp/refusing": spans_by_transport(sink)["grpc"],
                  "otlphttp/refusing": spans_by_transport(sink)["http"],
                  "otlp/down": spans_by_transport(late)["grpc"],
                  "otlphttp/down": spans_by_transport(late)["http"]}
            problems = []
            for exporter, spans in by.items():
                unique, total = unique_span_ids(spans)
                retries = m.value("sluice_exporter_retries_spans_total", exporter=exporter)
                counters = {k: m.value(f"otelcol_exporter_{k}_spans_total", exporter=exporter)
                            for k in ("sent", "send_failed", "enqueue_failed")}
                if unique != set(sent_ids) or total != n:
                    problems.append(f"{exporter}: {total} spans, {len(unique)} unique, "
                                    f"{len(set(sent_ids) - unique)} missing of {n}; counters {counters}")
                if retries <= 0:
                    problems.append(f"{exporter}: sluice_exporter_retries_spans_total = {retries}")
                if counters["send_failed"] or counters["enqueue_failed"]:
                    problems.append(f"{exporter}: counted failures {counters}")
            assert m.value("otelcol_receiver_accepted_spans_total") == n
            assert not problems, "\n".join(problems) + "\n" + proc.describe(60)
            assert time.monotonic() - started < 60
        finally:
            for relay in relays:
                relay.close()


# ---- 3. backend slower than the load ------------------------------------------------------

ALLOWED_OVERLOAD_OUTCOMES = {"ok", "grpc ResourceExhausted", "http 429"}


def drained(ports, exporter: str, timeout: float) -> Metrics:
    """Waits until the exporter's queue is empty and the counters stop moving."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        m = scrape(ports.metrics)
        key = (m.value("otelcol_exporter_sent_spans_total", exporter=exporter),
               m.value("otelcol_exporter_send_failed_spans_total", exporter=exporter),
               m.value("otelcol_exporter_enqueue_failed_spans_total", exporter=exporter))
        accepted = m.value("otelcol_receiver_accepted_spans_total")
        if m.value("otelcol_exporter_queue_size", exporter=exporter) == 0 and sum(key) == accepted and key == last:
            return m
        last = key
        time.sleep(0.5)
    return scrape(ports.metrics)


def test_slow_backend_pushes_back_with_429_and_resource_exhausted(run_sluice, sink, sluice_bin, tmp_path):
    sink.delay_seconds = 0.2
    ports = Ports()
    exporter = otlp_exporter(sink.grpc_endpoint, timeout="30s", sending_queue={
        "enabled": True, "queue_size": 2, "num_consumers": 1, "block_on_overflow": True})
    config = sluice_config(ports, exporters={"otlp": exporter},
                           processors={"batch": {"timeout": "100ms", "send_batch_size": 200,
                                                 "send_batch_max_size": 200}})
    with run_sluice(config) as proc:
        common = ["--rate", "0", "--workers", "8", "--duration", "10s", "--batch", "100"]
        with RssSampler(proc.pid, interval=0.05) as rss:
            gens = {
                "grpc": Loadgen(sluice_bin, [*common, "--protocol", "grpc", "--endpoint", f"127.0.0.1:{ports.grpc}"],
                                tmp_path / "loadgen-grpc.log"),
                "http": Loadgen(sluice_bin, [*common, "--protocol", "http", "--endpoint", f"127.0.0.1:{ports.http}"],
                                tmp_path / "loadgen-http.log"),
            }
            reports = {k: g.wait(40) for k, g in gens.items()}
        for k, rep in reports.items():
            assert rep.parsed, f"loadgen {k} printed no report:\n{rep.text}"
        assert alive(proc), "sluice died under load:\n" + proc.describe()
        m = drained(ports, "otlp", timeout=40)
        sent = m.value("otelcol_exporter_sent_spans_total", exporter="otlp")
        failed = m.value("otelcol_exporter_send_failed_spans_total", exporter="otlp")
        enqueue_failed = m.value("otelcol_exporter_enqueue_failed_spans_total", exporter="otlp")
        accepted = m.value("otelcol_receiver_accepted_spans_total")
        spans = sink.spans()
        unique, total = unique_span_ids(spans)
        summary = (f"grpc: {reports['grpc'].outcome_kinds()} accepted {reports['grpc'].items_accepted}; "
                   f"http: {reports['http'].outcome_kinds()} accepted {reports['http'].items_accepted}; "
                   f"sluice accepted {accepted} refused {m.value('otelcol_receiver_refused_spans_total')} "
                   f"sent {sent} send_failed {failed} enqueue_failed {enqueue_failed}; sink {total} spans "
                   f"({len(unique)} unique); RSS max {rss.max_mib:.0f} MiB")
        print(summary)

        # clients were told to back off, with the retryable codes and nothing else
        assert reports["grpc"].outcome_kinds().get("grpc ResourceExhausted", 0) > 0, summary
        assert reports["http"].outcome_kinds().get("http 429", 0) > 0, summary
        for k, rep in reports.items():
            unexpected = set(rep.outcome_kinds()) - ALLOWED_OVERLOAD_OUTCOMES
            assert not unexpected, f"{k} loadgen got {unexpected}: {rep.text}"
        assert rss.max_mib < 300, summary
        # every acknowledged span is accounted for, and with a healthy (slow) backend delivered
        assert reports["grpc"].items_accepted + reports["http"].items_accepted == accepted, summary
        assert accepted == sent + failed + enqueue_failed, summary
        assert total == len(unique) == sent, summary
        assert failed == 0 and enqueue_failed == 0, summary
        assert m.value("otelcol_receiver_refused_spans_total", transport="grpc") > 0, summary
        assert m.value("otelcol_receiver_refused_spans_total", transport="http") > 0, summary


# ---- 4. SIGTERM under load ----------------------------------------------------------------

@pytest.mark.parametrize("backend", ["healthy", "slow", "slow_blocking_queue"])
def test_sigterm_under_load_loses_nothing_acknowledged(run_sluice, sink, sluice_bin, tmp_path, backend):
    """SIGTERM while two loadgens blast sluice. Sluice exits 0 within shutdown_timeout, and
    every span a client got success for is in the sink or counted as failed. With a healthy
    backend everything must be delivered; with a slow one (0.3 s per request, more backlog
    than the shutdown_timeout can drain) what is not delivered must be counted -- also when
    the backlog sits in the pipeline behind a small blocking sending queue."""
    shutdown_timeout = 10 if backend == "healthy" else 3
    exporter = otlp_exporter(sink.grpc_endpoint, timeout="30s")  # no timeout-and-retry duplicates
    if backend.startswith("slow"):
        sink.delay_seconds = 0.3
    if backend == "slow_blocking_queue":  # the pipeline itself backs up behind the exporter
        exporter["sending_queue"] = {"enabled": True, "queue_size": 2, "num_consumers": 1, "block_on_overflow": True}
    ports = Ports()
    config = sluice_config(ports, exporters={"otlp": exporter},
                           processors={"batch": {"timeout": "100ms", "send_batch_size": 500,
                                                 "send_batch_max_size": 500}},
                           shutdown_timeout=f"{shutdown_timeout}s")
    with run_sluice(config) as proc:
        # healthy: a rate the Python sink keeps up with, so the drain fits in shutdown_timeout
        # on a busy machine too; slow: as fast as possible, so the backlog cannot drain
        rate = "10000" if backend == "healthy" else "0"
        common = ["--rate", rate, "--workers", "4", "--duration", "8s", "--batch", "50"]
        gens = {
            "grpc": Loadgen(sluice_bin, [*common, "--protocol", "grpc", "--endpoint", f"127.0.0.1:{ports.grpc}"],
                            tmp_path / "loadgen-grpc.log"),
            "http": Loadgen(sluice_bin, [*common, "--protocol", "http", "--endpoint", f"127.0.0.1:{ports.http}"],
                            tmp_path / "loadgen-http.log"),
        }
        try:
            time.sleep(3)
            before = scrape(ports.metrics)
            assert before.value("otelcol_receiver_accepted_spans_total") > 0, "no load reached sluice"
            proc.popen.send_signal(signal.SIGTERM)
            t0 = time.monotonic()
            try:
                rc = proc.popen.wait(shutdown_timeout + 15)
            except Exception:
                rc = None
            took = time.monotonic() - t0
        finally:
            reports = {k: g.wait(40) for k, g in gens.items()}
        time.sleep(0.5)  # let the sink finish recording the last requests
        log = proc.log_text()
        totals = final_summary(log)
        spans = sink.spans()
        unique, total = unique_span_ids(spans)
        acked = sum(r.items_accepted for r in reports.values())
        summary = (f"exit {rc} after {took:.2f}s (shutdown_timeout {shutdown_timeout}s); loadgen acked {acked} "
                   f"(grpc {reports['grpc'].outcome_kinds()}, http {reports['http'].outcome_kinds()}); "
                   f"sluice summary {totals}; sink {total} spans ({len(unique)} unique)")
        print(summary)
        assert rc == 0, summary + "\n" + proc.describe(40)
        assert took <= shutdown_timeout + 1.0, summary
        assert total == len(unique), "duplicates in the sink: " + summary
        assert acked <= totals["accepted"], summary
        # the books balance: everything accepted was either sent or counted as failed
        assert totals["accepted"] == totals["sent"] + totals["failed"], summary
        # what sluice counts as sent really arrived (an export cut off at the deadline is
        # counted as failed even if the backend got it, so the sink may hold more than `sent`)
        assert totals["sent"] <= total <= totals["accepted"], summary
        # nothing acknowledged is lost silently: in the sink or counted as failed
        assert total + totals["failed"] >= acked, summary
        if backend == "healthy":
            assert totals["failed"] == 0, summary
            assert total == totals["sent"] == totals["accepted"], summary
            assert total >= acked, summary


# ---- 5. memory_limiter --------------------------------------------------------------------

def memory_limited_sluice(run_sluice, sink, limit_mib: int, spike_limit_mib: int, **exporter_extra):
    ports = Ports()
    config = sluice_config(ports, exporters={"otlp": otlp_exporter(sink.grpc_endpoint, **exporter_extra)}, processors={
        "memory_limiter": {"check_interval": "100ms", "limit_mib": limit_mib, "spike_limit_mib": spike_limit_mib},
        "batch": {"timeout": "100ms"},
    })
    return ports, run_sluice(config)


def test_memory_limiter_over_soft_limit_refuses_with_retryable_codes(run_sluice, sink):
    # soft limit = limit_mib - spike_limit_mib = 1 MiB: below any process's idle RSS (the
    # debug build idles at ~14 MiB), so the limiter refuses from its first check on
    ports, proc = memory_limited_sluice(run_sluice, sink, limit_mib=4, spike_limit_mib=3)
    with proc:
        time.sleep(0.5)  # a few checks
        rss = rss_kib(proc.pid) / 1024
        assert rss > 1, f"sluice idles at {rss:.1f} MiB, not above the 1 MiB soft limit"
        body, _ = trace_request(5, 1)
        for attempt in range(3):
            code, details, trailers = grpc_export(ports.grpc, body, with_trailers=True)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, f"gRPC over the memory limit: {code} {details!r}"
            assert details.strip()
            # OTLP: a retryable RESOURCE_EXHAUSTED carries RetryInfo (clients treat it as permanent otherwise)
            assert grpc_retry_delay(trailers), f"RESOURCE_EXHAUSTED without RetryInfo: {trailers}"
            r = http_export(ports.http, body)
            assert r.status_code == 429, f"HTTP over the memory limit: {r.status_code} {r.content!r}"
            assert r.headers.get("Retry-After"), f"429 without Retry-After: {dict(r.headers)}"
            assert http_error_message(r).strip()
        assert alive(proc)
        m = scrape(ports.metrics)
        assert m.value("otelcol_receiver_refused_spans_total", transport="grpc") == 15
        assert m.value("otelcol_receiver_refused_spans_total", transport="http") == 15
        assert m.value("otelcol_receiver_accepted_spans_total") == 0
        time.sleep(0.5)
        assert sink.span_count() == 0, "refused data reached the backend"


def test_memory_limiter_generous_limit_accepts(run_sluice, sink):
    ports, proc = memory_limited_sluice(run_sluice, sink, limit_mib=2048, spike_limit_mib=512)
    with proc:
        time.sleep(0.5)
        body, ids = trace_request(5, 1)
        body2, ids2 = trace_request(5, 100)
        code, details = grpc_export(ports.grpc, body)
        assert code == grpc.StatusCode.OK, f"{code} {details}"
        r = http_export(ports.http, body2)
        assert r.status_code == 200, f"HTTP {r.status_code} {r.content!r}"
        assert sink.wait_for(lambda: sink.span_count() >= 10, 10)
        assert {s.span_id for s in sink.spans()} == set(ids + ids2)
        m = scrape(ports.metrics)
        assert m.value("otelcol_receiver_accepted_spans_total") == 10
        assert m.value("otelcol_receiver_refused_spans_total") == 0


def test_memory_limiter_under_load_bounds_rss_and_only_refuses_retryably(run_sluice, sink, sluice_bin, tmp_path):
    """A slow backend and a blast of big requests push sluice's memory up; the limiter
    (limit 80 MiB, soft 60 MiB) must engage, clients get only RESOURCE_EXHAUSTED / 429, RSS
    stays near the limit, and everything acknowledged is delivered once the load stops."""
    sink.delay_seconds = 0.5
    # A generous export timeout: the Python sink is slow with big requests, and a timed-out
    # export is rightly retried, which would show up as duplicates that are not sluice's fault.
    ports, proc = memory_limited_sluice(run_sluice, sink, limit_mib=80, spike_limit_mib=20, timeout="30s")
    with proc:
        common = ["--rate", "0", "--workers", "16", "--duration", "8s", "--batch", "500"]
        with RssSampler(proc.pid, interval=0.05) as rss:
            gens = {p: Loadgen(sluice_bin, [*common, "--protocol", p, "--endpoint",
                                            f"127.0.0.1:{ports.grpc if p == 'grpc' else ports.http}"],
                               tmp_path / f"loadgen-{p}.log") for p in ("grpc", "http")}
            reports = {k: g.wait(40) for k, g in gens.items()}
        assert alive(proc), "sluice died under load:\n" + proc.describe()
        m = scrape(ports.metrics)
        summary = (f"grpc {reports['grpc'].outcome_kinds()}, http {reports['http'].outcome_kinds()}; "
                   f"RSS max {rss.max_mib:.0f} MiB; limiter refusing checks "
                   f"{m.value('sluice_memory_limiter_refusing_checks_total')}")
        print(summary)
        assert m.value("sluice_memory_limiter_refusing_checks_total") > 0, "the limiter never engaged: " + summary
        for k, rep in reports.items():
            assert rep.parsed, rep.text
            unexpected = set(rep.outcome_kinds()) - ALLOWED_OVERLOAD_OUTCOMES
            assert not unexpected, f"{k} loadgen got {unexpected}: {rep.text}"
        assert rss.max_mib < 120, summary
        m = drained(ports, "otlp", timeout=40)
        accepted = m.value("otelcol_receiver_accepted_spans_total")
        acked = sum(r.items_accepted for r in reports.values())
        unique, total = unique_span_ids(sink.spans())
        assert acked == accepted == m.value("otelcol_exporter_sent_spans_total", exporter="otlp") == total == len(unique), \
            f"acked {acked}, accepted {accepted}, sink {total} ({len(unique)} unique); " + summary
