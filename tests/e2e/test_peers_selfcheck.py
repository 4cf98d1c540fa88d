"""Self-checks of the e2e infrastructure, without sluice.

They prove the peers are invoked correctly and the sink decodes what real
OTLP senders produce: Python SDK -> rotel -> sink, otelcol filelog -> sink,
plus the sink's own failure injection and encodings.
"""

import gzip

import grpc
import pytest
import requests
import zstandard
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor

from peers import Proc, ProcError, free_port, start_otelcol, start_rotel

SPANS = 50


def attr_map(attributes) -> dict:
    out = {}
    for kv in attributes:
        kind = kv.value.WhichOneof("value")
        value = getattr(kv.value, kind)
        out[kv.key] = [getattr(v, v.WhichOneof("value")) for v in value.values] if kind == "array_value" else value
    return out


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_sdk_to_rotel_to_sink(sink, tmp_path, protocol):
    grpc_port, http_port = free_port(), free_port()
    endpoint = sink.grpc_endpoint if protocol == "grpc" else sink.http_endpoint
    with start_rotel(grpc_port, http_port, endpoint, protocol, log_dir=tmp_path,
                     extra_args=["--batch-timeout", "100ms"]):
        provider = TracerProvider(resource=Resource.create({"service.name": "selfcheck"}))
        provider.add_span_processor(BatchSpanProcessor(
            OTLPSpanExporter(endpoint=f"127.0.0.1:{grpc_port}", insecure=True, timeout=5)))
        tracer = provider.get_tracer("selfcheck")
        sent = {}
        for i in range(SPANS):
            with tracer.start_as_current_span(f"span-{i}", attributes={
                "i": i, "even": i % 2 == 0, "ratio": i / 4, "label": f"v{i}", "tags": ["a", str(i)],
            }) as span:
                sent[span.get_span_context().span_id.to_bytes(8, "big")] = i
        provider.shutdown()
        assert sink.wait_for(lambda: sink.span_count() >= SPANS, 15), f"got {sink.span_count()} spans"

    spans = sink.spans()
    assert len(spans) == SPANS
    for span in spans:
        i = sent[span.span_id]
        assert span.name == f"span-{i}"
        assert attr_map(span.attributes) == {"i": i, "even": i % 2 == 0, "ratio": i / 4, "label": f"v{i}",
                                             "tags": ["a", str(i)]}
    resource = attr_map(sink.traces[0].resource_spans[0].resource.attributes)
    assert resource["service.name"] == "selfcheck"
    assert {r.transport for r in sink.requests} == {protocol}
    assert sink.encodings() == {"gzip"}  # this rotel build always gzips its exports


def test_otelcol_filelog_to_sink_http(sink, tmp_path):
    log_file = tmp_path / "app.log"
    lines = [f"line {i} of the self-check" for i in range(30)]
    log_file.write_text("".join(line + "\n" for line in lines))
    config = f"""
receivers:
  filelog:
    include: [{log_file}]
    start_at: beginning
processors:
  batch:
    timeout: 100ms
exporters:
  otlphttp:
    endpoint: {sink.http_endpoint}
    compression: gzip
service:
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
"""
    with start_otelcol(config, log_dir=tmp_path):
        assert sink.wait_for(lambda: sink.log_count() >= len(lines), 15), f"got {sink.log_count()} logs"
    assert sorted(r.body.string_value for r in sink.log_records()) == sorted(lines)
    assert {(r.transport, r.signal, r.encoding) for r in sink.requests} == {("http", "logs", "gzip")}


def test_sink_encodings_and_failure_injection(sink):
    request = trace_service_pb2.ExportTraceServiceRequest()
    request.resource_spans.add().scope_spans.add().spans.add(name="x" * 200)
    body = request.SerializeToString()
    url = sink.http_endpoint + "/v1/traces"
    headers = {"Content-Type": "application/x-protobuf"}
    sink.fail_with(count=2)
    assert [requests.post(url, data=body, headers=headers, timeout=5).status_code for _ in range(3)] == [503, 503, 200]
    for name, data in (("zstd", zstandard.ZstdCompressor().compress(body)), ("gzip", gzip.compress(body))):
        r = requests.post(url, data=data, headers={**headers, "Content-Encoding": name}, timeout=5)
        assert r.status_code == 200
    assert [r.encoding for r in sink.requests][-2:] == ["zstd", "gzip"]

    with grpc.insecure_channel(sink.grpc_endpoint, compression=grpc.Compression.Gzip) as channel:
        stub = trace_service_pb2_grpc.TraceServiceStub(channel)
        sink.fail_with()  # until recover()
        with pytest.raises(grpc.RpcError) as err:
            stub.Export(request, timeout=5)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        sink.recover()
        stub.Export(request, timeout=5)
    assert [(r.transport, r.encoding, r.status) for r in sink.requests][-2:] == [("grpc", "gzip", 14), ("grpc", "gzip", 0)]
    assert sink.request_count("traces", accepted_only=True) == 4
    assert sink.span_count() == 4


def test_proc_reports_early_exit(tmp_path):
    with pytest.raises(ProcError, match="exited with code 3"):
        Proc(["sh", "-c", "echo boom; exit 3"], tmp_path / "p.log", ports=[free_port()]).start()
