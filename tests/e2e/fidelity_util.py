"""Helpers for the fidelity tests: sluice configs, telemetry built with the real
OpenTelemetry Python SDK, and normalisation of decoded OTLP requests so that what
arrived can be compared with what was sent whatever the batching in between.

Normalisation flattens a list of Export*ServiceRequest messages into one entry
per item (span, log record, metric data point) carrying its resource, scope and
schema URLs (and, for metrics, the metric envelope without its data points),
rendered with `MessageToDict` and sorted. Two request lists normalise equally iff
they hold the same items with the same context, byte for byte in every field.
"""

from __future__ import annotations

import base64
import copy
import json
import re
import time
import urllib.request

import pytest
from google.protobuf.json_format import MessageToDict, ParseDict
from opentelemetry.sdk._logs.export import LogRecordExportResult
from opentelemetry.sdk.metrics.export import MetricExportResult, MetricsData
from opentelemetry.sdk.trace.export import SpanExportResult

import sdk_data
from peers import free_port

# ---- sluice configs ---------------------------------------------------------

RETRY = {"initial_interval": "100ms", "max_interval": "500ms", "max_elapsed_time": "10s"}


class SluiceSetup:
    """Free ports for one sluice instance and its YAML config."""

    def __init__(self):
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()

    @property
    def grpc_endpoint(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def config(self, exporters: dict, batch: dict | None = None,
               signals=("traces", "metrics", "logs")) -> str:
        """otlp receiver (gRPC + HTTP) -> batch -> `exporters` for every signal in `signals`."""
        cfg = {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": self.grpc_endpoint},
                "http": {"endpoint": f"127.0.0.1:{self.http_port}"},
            }}},
            "processors": {"batch": batch or {"timeout": "100ms"}},
            "exporters": exporters,
            "service": {
                "pipelines": {s: {"receivers": ["otlp"], "processors": ["batch"], "exporters": list(exporters)}
                              for s in signals},
                "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics_port}"}},
            },
        }
        return json.dumps(cfg, indent=2)  # JSON is YAML

    def self_metrics(self) -> dict[str, float]:
        """Sluice's Prometheus self-metrics as {'name{labels}': value}."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as resp:
            text = resp.read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                key, _, value = line.rpartition(" ")
                out[key] = float(value)
        return out

    def self_metric(self, name: str, **labels) -> float | None:
        """Sum of the series of `name` whose labels include `labels`; None if there is none."""
        found = None
        for key, value in self.self_metrics().items():
            m = re.fullmatch(r"([^{]+)(?:\{(.*)\})?", key)
            if not m or m.group(1) != name:
                continue
            have = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', m.group(2) or ""))
            if all(have.get(k) == v for k, v in labels.items()):
                found = (found or 0) + value
        return found


def otlp_exporter(sink, compression: str | None = None) -> dict:
    cfg = {"endpoint": sink.grpc_endpoint, "tls": {"insecure": True}, "retry_on_failure": RETRY}
    if compression:
        cfg["compression"] = compression
    return {"otlp": cfg}


def otlphttp_exporter(sink, compression: str | None = None) -> dict:
    cfg = {"endpoint": sink.http_endpoint, "retry_on_failure": RETRY}
    if compression:
        cfg["compression"] = compression
    return {"otlphttp": cfg}


# ---- normalisation ----------------------------------------------------------

def to_dict(message) -> dict:
    return MessageToDict(message, preserving_proto_field_name=True)


def _key(entry) -> str:
    return json.dumps(entry, sort_keys=True)


def _context(resource_entry, scope_entry) -> dict:
    return {
        "resource": to_dict(resource_entry.resource),
        "resource_schema_url": resource_entry.schema_url,
        "scope": to_dict(scope_entry.scope),
        "scope_schema_url": scope_entry.schema_url,
    }


def flat_spans(requests) -> list[dict]:
    out = []
    for req in requests:
        for rs in req.resource_spans:
            for ss in rs.scope_spans:
                for span in ss.spans:
                    out.append({**_context(rs, ss), "span_id": span.span_id.hex(), "span": to_dict(span)})
    return sorted(out, key=lambda e: (e["span_id"], _key(e)))


def flat_logs(requests) -> list[dict]:
    out = []
    for req in requests:
        for rl in req.resource_logs:
            for sl in rl.scope_logs:
                for rec in sl.log_records:
                    out.append({**_context(rl, sl), "log": to_dict(rec)})
    return sorted(out, key=_key)


def flat_metrics(requests) -> list[dict]:
    out = []
    for req in requests:
        for rm in req.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    kind = metric.WhichOneof("data")
                    envelope = copy.deepcopy(metric)
                    del getattr(envelope, kind).data_points[:]
                    for point in getattr(metric, kind).data_points:
                        out.append({**_context(rm, sm), "metric": to_dict(envelope), "kind": kind,
                                    "point": to_dict(point)})
    return sorted(out, key=lambda e: (e["metric"].get("name", ""), _key(e)))


FLATTEN = {"traces": flat_spans, "metrics": flat_metrics, "logs": flat_logs}


def item_count(signal: str, requests) -> int:
    return len(FLATTEN[signal](requests))


def sink_items(sink, signal: str) -> int:
    return {"traces": sink.span_count, "logs": sink.log_count, "metrics": sink.datapoint_count}[signal]()


def wait_exact(sink, signal: str, expected: int, timeout: float = 15.0, settle: float = 0.3) -> int:
    """Wait until the sink holds `expected` items of `signal`, then a little longer to catch extras."""
    sink.wait_for(lambda: sink_items(sink, signal) >= expected, timeout)
    time.sleep(settle)
    return sink_items(sink, signal)


def snapshot(sink, signal: str) -> list:
    with sink._cond:
        return list(getattr(sink, signal))


# ---- OTLP/JSON -> protobuf (the spec mapping: hex ids, int64 as number or string) ----

_HEX_ID_FIELDS = {"traceId", "spanId", "parentSpanId", "trace_id", "span_id", "parent_span_id"}


def _hex_ids_to_base64(value):
    if isinstance(value, dict):
        return {k: (base64.b64encode(bytes.fromhex(v)).decode() if k in _HEX_ID_FIELDS and isinstance(v, str)
                    else _hex_ids_to_base64(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_hex_ids_to_base64(v) for v in value]
    return value


def parse_otlp_json(payload: dict, message_type):
    """What an OTLP/JSON payload means, decoded with the reference protobuf library."""
    return ParseDict(_hex_ids_to_base64(payload), message_type())


def snake_case_keys(value):
    if isinstance(value, dict):
        return {re.sub(r"(?<!^)([A-Z])", lambda m: "_" + m.group(1).lower(), k): snake_case_keys(v)
                for k, v in value.items()}
    if isinstance(value, list):
        return [snake_case_keys(v) for v in value]
    return value


_INT64_FIELDS = re.compile(r"(TimeUnixNano|time_unix_nano|intValue|int_value|asInt|as_int)$|^count$")


def int64_as_strings(value):
    """The same payload with every 64-bit integer field written as a JSON string, as the spec prefers."""
    if isinstance(value, dict):
        return {k: (str(v) if isinstance(v, int) and not isinstance(v, bool) and _INT64_FIELDS.search(k)
                    else [str(x) for x in v] if k in ("bucketCounts", "bucket_counts") and isinstance(v, list)
                    else int64_as_strings(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [int64_as_strings(v) for v in value]
    return value


def _ids_to_hex(value):
    if isinstance(value, dict):
        return {k: (base64.b64decode(v).hex() if k in _HEX_ID_FIELDS and isinstance(v, str)
                    else _ids_to_hex(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_ids_to_hex(v) for v in value]
    return value


def to_otlp_json(message) -> dict:
    """A protobuf message in OTLP/JSON as the spec writes it: lowerCamelCase keys, enums as
    integers, 64-bit integers as strings, bytes as base64 except trace/span ids as hex."""
    return _ids_to_hex(MessageToDict(message, use_integers_for_enums=True))


# ---- comparing flattened items ------------------------------------------------

def _short(entry, limit=2500) -> str:
    text = json.dumps(entry, sort_keys=True, ensure_ascii=False)
    return text if len(text) <= limit else text[:limit] + "…"


def _diff_paths(a, b, path="", out=None, limit=8):
    """Paths where two decoded JSON-like values differ, with both values."""
    out = [] if out is None else out
    if len(out) >= limit:
        return out
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            _diff_paths(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}.{k}", out, limit)
    elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        for i, (x, y) in enumerate(zip(a, b)):
            _diff_paths(x, y, f"{path}[{i}]", out, limit)
    elif a != b:
        out.append(f"{path or '.'}: sent {_short(a, 300)} / received {_short(b, 300)}")
    return out


def assert_same_items(got: list[dict], want: list[dict], what: str) -> None:
    """Equal flattened item lists; on failure, say which items are missing or altered and how."""
    if got == want:
        return
    got_keys = [json.dumps(e, sort_keys=True) for e in got]
    want_keys = [json.dumps(e, sort_keys=True) for e in want]
    missing = [e for e, k in zip(want, want_keys) if k not in set(got_keys)]
    extra = [e for e, k in zip(got, got_keys) if k not in set(want_keys)]
    lines = [f"{what}: {len(got)} items arrived, {len(want)} sent; {len(missing)} sent items not found "
             f"unchanged, {len(extra)} arrived items not among those sent"]
    for sent, received in list(zip(missing, extra))[:3]:
        lines.append("altered item; differences: " + "; ".join(_diff_paths(sent, received)))
    for e in missing[len(extra):][:2]:
        lines.append("SENT, never received: " + _short(e))
    for e in extra[len(missing):][:2]:
        lines.append("RECEIVED, never sent: " + _short(e))
    if not missing and not extra:
        lines.append("same items but different multiplicity (duplicates or losses)")
    pytest.fail("\n".join(lines), pytrace=False)


# ---- the SDK's OTLP exporters ------------------------------------------------------

def sdk_exporter(signal: str, protocol: str, grpc_endpoint: str, http_base: str, gzip: bool = False):
    from grpc import Compression as GrpcCompression
    from opentelemetry.exporter.otlp.proto.http import Compression as HttpCompression
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        cls = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}[signal]
        return cls(endpoint=grpc_endpoint, insecure=True, timeout=10,
                   compression=GrpcCompression.Gzip if gzip else GrpcCompression.NoCompression)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    cls = {"traces": OTLPSpanExporter, "metrics": OTLPMetricExporter, "logs": OTLPLogExporter}[signal]
    return cls(endpoint=f"{http_base}/v1/{signal}", timeout=10,
               compression=HttpCompression.Gzip if gzip else HttpCompression.NoCompression)


SUCCESS = {"traces": SpanExportResult.SUCCESS, "metrics": MetricExportResult.SUCCESS,
           "logs": LogRecordExportResult.SUCCESS}


def sdk_export(signal, data, protocol, grpc_endpoint, http_base, gzip=False):
    exporter = sdk_exporter(signal, protocol, grpc_endpoint, http_base, gzip)
    try:
        result = exporter.export(data)
    finally:
        exporter.shutdown()
    assert result == SUCCESS[signal], f"SDK {protocol} exporter failed to export {signal}: {result}"


def build_sdk_payloads() -> dict:
    """The SDK telemetry of sdk_data: ReadableSpans, ReadableLogRecords and one MetricsData."""
    metrics = sdk_data.build_metrics()
    return {
        "traces": sdk_data.build_spans(),
        "logs": sdk_data.build_logs(),
        "metrics": MetricsData(resource_metrics=[rm for d in metrics for rm in d.resource_metrics]),
    }


def encode_sdk(signal, data):
    """The Export*ServiceRequest the SDK's exporters send for `data`."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    from opentelemetry.exporter.otlp.proto.common.metrics_encoder import encode_metrics
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    return {"traces": encode_spans, "metrics": encode_metrics, "logs": encode_logs}[signal](data)
