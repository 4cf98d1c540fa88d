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

from google.protobuf.json_format import MessageToDict, ParseDict

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
            "processors": {"batch": batch or {"timeout": "200ms"}},
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


def wait_exact(sink, signal: str, expected: int, timeout: float = 15.0, settle: float = 0.5) -> int:
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
