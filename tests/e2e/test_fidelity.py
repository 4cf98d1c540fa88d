"""Fidelity: what goes into sluice comes out unchanged, field by field.

* The real OpenTelemetry Python SDK exports the same in-memory telemetry twice with its
  own OTLP exporters (gRPC or HTTP/protobuf, plain or gzip): once straight to the sink
  (the reference), once through sluice (otlp receiver -> batch -> otlp or otlphttp
  exporter, also with small batches that split requests). The decoded requests are
  flattened to items with their resource and scope and compared (fidelity_util.py).
* Summary metrics (which the SDK cannot produce) are built by hand and POSTed as protobuf.
* OTLP/JSON over HTTP: the opentelemetry-proto repository's example payloads, verbatim and
  in variants (string int64s, snake_case names, lowercase hex, gzip), sent with curl; the
  SDK's rich telemetry written as canonical OTLP/JSON; non-finite and hard-to-round
  doubles; unknown fields. Each must decode to what the protobuf JSON mapping says.
  Malformed requests get 400 with a JSON error body; other content types 415.
* `sluice validate`: pipeline graph for a valid config; file:line:column, key path and a
  suggestion for a typo.
"""

from __future__ import annotations

import gzip
import json
import math
import subprocess
import time

import pytest
import requests
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
    ExportMetricsServiceResponse,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue

from fidelity_util import (
    FLATTEN,
    SluiceSetup,
    assert_same_items,
    build_sdk_payloads,
    encode_sdk,
    int64_as_strings,
    otlp_exporter,
    otlphttp_exporter,
    parse_otlp_json,
    sdk_export,
    snake_case_keys,
    snapshot,
    to_otlp_json,
    wait_exact,
)

TIMEOUT = 15.0


# ---- the SDK through sluice ----------------------------------------------------

@pytest.fixture(scope="module")
def sdk_payloads():
    """Built once: the exact same SDK objects are exported in every run."""
    return build_sdk_payloads()


SPLIT = {"timeout": "100ms", "send_batch_size": 5, "send_batch_max_size": 7}
# SDK protocol (into sluice's receiver), SDK gzip, sluice exporter, its compression, batch settings
ROUTES = {
    "grpc-otlp": ("grpc", False, "otlp", None, None),
    "http-otlphttp": ("http", False, "otlphttp", None, None),
    "grpcgzip-otlphttp-zstd-split": ("grpc", True, "otlphttp", "zstd", SPLIT),
    "httpgzip-otlp-none-split": ("http", True, "otlp", "none", SPLIT),
}
SELF_METRIC = {"traces": "spans", "metrics": "metric_points", "logs": "log_records"}


@pytest.mark.parametrize("signal", ["traces", "logs", "metrics"])
@pytest.mark.parametrize("route", list(ROUTES))
def test_fidelity_sdk_through_sluice(sink, run_sluice, sdk_payloads, signal, route):
    protocol, sdk_gzip, exporter, compression, batch = ROUTES[route]
    data = sdk_payloads[signal]

    # Reference: the SDK straight into the sink, same protocol.
    sdk_export(signal, data, protocol, sink.grpc_endpoint, sink.http_endpoint, sdk_gzip)
    reference = snapshot(sink, signal)
    want = FLATTEN[signal](reference)
    assert want == FLATTEN[signal]([encode_sdk(signal, data)]), "reference run is not what the SDK encodes"
    sink.clear()

    setup = SluiceSetup()
    exporters = (otlp_exporter if exporter == "otlp" else otlphttp_exporter)(sink, compression)
    with run_sluice(setup.config(exporters, batch=batch, signals=[signal])) as proc:
        sdk_export(signal, data, protocol, setup.grpc_endpoint, setup.http_url, sdk_gzip)
        n = wait_exact(sink, signal, len(want), TIMEOUT)
        assert n == len(want), f"sink got {n} {signal} items through sluice, expected {len(want)}\n{proc.describe()}"
        got = FLATTEN[signal](snapshot(sink, signal))
        assert_same_items(got, want, f"{signal} via {route}")

        # Where it went and how.
        transport = "grpc" if exporter == "otlp" else "http"
        assert {(r.transport, r.signal, r.status) for r in sink.requests} == {(transport, signal, 0 if transport == "grpc" else 200)}
        assert sink.encodings() == {{None: "gzip", "none": "identity"}.get(compression, compression)}
        if batch:
            sizes = [len(FLATTEN[signal]([m])) for m in snapshot(sink, signal)]
            assert max(sizes) <= batch["send_batch_max_size"], f"batches larger than send_batch_max_size: {sizes}"

        # Sluice's own accounting agrees.
        item = SELF_METRIC[signal]
        accepted = setup.self_metric(f"otelcol_receiver_accepted_{item}_total", receiver="otlp", transport=protocol)
        sent = setup.self_metric(f"otelcol_exporter_sent_{item}_total", exporter=exporter)
        assert (accepted, sent) == (len(want), len(want)), f"self-metrics accepted={accepted} sent={sent}"


# ---- summary metrics (hand-built; the SDK has no summaries) ---------------------

def _kv(key, **value) -> KeyValue:
    return KeyValue(key=key, value=AnyValue(**value))


def summary_request() -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    rm = req.resource_metrics.add(schema_url="https://opentelemetry.io/schemas/1.21.0")
    rm.resource.attributes.extend([_kv("service.name", string_value="summary-svc"), _kv("pid", int_value=4242)])
    rm.resource.dropped_attributes_count = 1
    sm = rm.scope_metrics.add(schema_url="https://example.com/scope")
    sm.scope.name, sm.scope.version = "legacy.prometheus", "0.9"
    sm.scope.attributes.append(_kv("scope.k", bool_value=True))
    m = sm.metrics.add(name="rpc.duration", description="summary of rpc durations ✓", unit="s")
    m.metadata.append(_kv("prometheus.type", string_value="summary"))
    for i in range(5):
        p = m.summary.data_points.add(start_time_unix_nano=1_700_000_000_000_000_000,
                                      time_unix_nano=1_700_000_060_000_000_000 + i, count=100 + i,
                                      sum=12.5 * (i + 1), flags=1 if i == 4 else 0)
        p.attributes.extend([_kv("method", string_value=f"M{i}"), _kv("ok", bool_value=i % 2 == 0),
                             _kv("weights", array_value={"values": [{"double_value": 0.5}, {"int_value": -3}]})])
        for q, v in ((0.0, 0.001), (0.5, 0.12 + i), (0.9, 0.5), (0.99, 1.25), (1.0, 9.75)):
            p.quantile_values.add(quantile=q, value=v)
    m2 = sm.metrics.add(name="empty.summary", unit="1")
    m2.summary.data_points.add(time_unix_nano=1_700_000_000_000_000_001, count=0, sum=0.0)
    return req


@pytest.mark.parametrize("exporter", ["otlp", "otlphttp"])
def test_fidelity_summary_protobuf_over_http(sink, run_sluice, exporter):
    req = summary_request()
    setup = SluiceSetup()
    exporters = (otlp_exporter if exporter == "otlp" else otlphttp_exporter)(sink)
    with run_sluice(setup.config(exporters, signals=["metrics"])) as proc:
        resp = requests.post(setup.http_url + "/v1/metrics", data=req.SerializeToString(),
                             headers={"Content-Type": "application/x-protobuf"}, timeout=10)
        assert resp.status_code == 200, resp.text
        assert resp.headers["Content-Type"].startswith("application/x-protobuf")
        response = ExportMetricsServiceResponse.FromString(resp.content)
        assert response.partial_success.rejected_data_points == 0
        n = wait_exact(sink, "metrics", 6, TIMEOUT)
        assert n == 6, f"sink got {n} data points, expected 6\n{proc.describe()}"
    received = snapshot(sink, "metrics")
    assert_same_items(FLATTEN["metrics"](received), FLATTEN["metrics"]([req]), "summary metrics")
    # One request in, nothing else to batch with: it arrives as one identical request.
    assert len(received) == 1 and received[0] == req, f"request changed:\n{received[0]}"
    point = received[0].resource_metrics[0].scope_metrics[0].metrics[0].summary.data_points[4]
    assert [(q.quantile, q.value) for q in point.quantile_values] == [
        (0.0, 0.001), (0.5, 4.12), (0.9, 0.5), (0.99, 1.25), (1.0, 9.75)]
    assert (point.count, point.sum, point.flags) == (104, 62.5, 1)


# ---- OTLP/JSON over HTTP ----------------------------------------------------------
# The example payloads of github.com/open-telemetry/opentelemetry-proto/examples/, verbatim.

SPEC_TRACE_JSON = r"""{
  "resourceSpans": [
    {
      "resource": {
        "attributes": [
          {
            "key": "service.name",
            "value": {
              "stringValue": "my.service"
            }
          }
        ]
      },
      "scopeSpans": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {
                "key": "my.scope.attribute",
                "value": {
                  "stringValue": "some scope attribute"
                }
              }
            ]
          },
          "spans": [
            {
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "parentSpanId": "EEE19B7EC3C1B173",
              "name": "I'm a server span",
              "startTimeUnixNano": 1544712660000000000,
              "endTimeUnixNano": 1544712661000000000,
              "kind": 2,
              "attributes": [
                {
                  "key": "my.span.attr",
                  "value": {
                    "stringValue": "some value"
                  }
                }
              ]
            }
          ]
        }
      ]
    }
  ]
}"""

SPEC_METRICS_JSON = r"""{
  "resourceMetrics": [
    {
      "resource": {
        "attributes": [
          {
            "key": "service.name",
            "value": {
              "stringValue": "my.service"
            }
          }
        ]
      },
      "scopeMetrics": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {
                "key": "my.scope.attribute",
                "value": {
                  "stringValue": "some scope attribute"
                }
              }
            ]
          },
          "metrics": [
            {
              "name": "my.counter",
              "unit": "1",
              "description": "I`m a Counter",
              "sum": {
                "aggregationTemporality": 1,
                "isMonotonic": true,
                "dataPoints": [
                  {
                    "asDouble": 5,
                    "startTimeUnixNano": 1544712660300000000,
                    "timeUnixNano": 1544712660300000000,
                    "attributes": [
                      {
                        "key": "my.counter.attr",
                        "value": {
                          "stringValue": "some value"
                        }
                      }
                    ]
                  }
                ]
              }
            },
            {
              "name": "my.gauge",
              "unit": "1",
              "description": "I`m a Gauge",
              "gauge": {
                "dataPoints": [
                  {
                    "asDouble": 10,
                    "timeUnixNano": 1544712660300000000,
                    "attributes": [
                      {
                        "key": "my.gauge.attr",
                        "value": {
                          "stringValue": "some value"
                        }
                      }
                    ]
                  }
                ]
              }
            },
            {
              "name": "my.histogram",
              "unit": "1",
              "description": "I`m a Histogram",
              "histogram": {
                "aggregationTemporality": 1,
                "dataPoints": [
                  {
                    "startTimeUnixNano": 1544712660300000000,
                    "timeUnixNano": 1544712660300000000,
                    "count": 3,
                    "sum": 3,
                    "bucketCounts": [1,1,1],
                    "explicitBounds": [1],
                    "min": 1,
                    "max": 1,
                    "attributes": [
                      {
                        "key": "my.histogram.attr",
                        "value": {
                          "stringValue": "some value"
                        }
                      }
                    ]
                  }
                ]
              }
            }
          ]
        }
      ]
    }
  ]
}"""

SPEC_LOGS_JSON = r"""{
  "resourceLogs": [
    {
      "resource": {
        "attributes": [
          {
            "key": "service.name",
            "value": {
              "stringValue": "my.service"
            }
          }
        ]
      },
      "scopeLogs": [
        {
          "scope": {
            "name": "my.library",
            "version": "1.0.0",
            "attributes": [
              {
                "key": "my.scope.attribute",
                "value": {
                  "stringValue": "some scope attribute"
                }
              }
            ]
          },
          "logRecords": [
            {
              "timeUnixNano": 1544712660300000000,
              "observedTimeUnixNano": 1544712660300000000,
              "severityText": "Information",
              "traceId": "5B8EFFF798038103D269B633813FC60C",
              "spanId": "EEE19B7EC3C1B174",
              "body": {
                "stringValue": "Example log record"
              },
              "attributes": [
                {
                  "key": "string.attribute",
                  "value": {
                    "stringValue": "some string"
                  }
                },
                {
                  "key": "boolean.attribute",
                  "value": {
                    "boolValue": true
                  }
                },
                {
                  "key": "int.attribute",
                  "value": {
                    "intValue": 10
                  }
                },
                {
                  "key": "double.attribute",
                  "value": {
                    "doubleValue": 637.704
                  }
                },
                {
                  "key": "array.attribute",
                  "value": {
                    "arrayValue": {
                      "values": [
                        {
                          "stringValue": "many"
                        },
                        {
                          "stringValue": "values"
                        }
                      ]
                    }
                  }
                },
                {
                  "key": "map.attribute",
                  "value": {
                    "kvlistValue": {
                      "values": [
                        {
                          "key": "some.map.key",
                          "value": {
                            "stringValue": "some value"
                          }
                        }
                      ]
                    }
                  }
                }
              ]
            }
          ]
        }
      ]
    }
  ]
}"""

SPEC_JSON = {"traces": SPEC_TRACE_JSON, "metrics": SPEC_METRICS_JSON, "logs": SPEC_LOGS_JSON}
REQUEST_TYPES = {"traces": ExportTraceServiceRequest, "metrics": ExportMetricsServiceRequest,
                 "logs": ExportLogsServiceRequest}
SPEC_ITEMS = {"traces": 1, "metrics": 3, "logs": 1}


def _lower_hex(value):
    if isinstance(value, dict):
        return {k: (v.lower() if k in ("traceId", "spanId", "parentSpanId") else _lower_hex(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [_lower_hex(v) for v in value]
    return value


JSON_VARIANTS = {
    "spec-verbatim": lambda text: text,
    "int64-as-strings": lambda text: json.dumps(int64_as_strings(json.loads(text))),
    "snake-case": lambda text: json.dumps(snake_case_keys(json.loads(text))),
    "lowercase-hex-compact": lambda text: json.dumps(_lower_hex(json.loads(text)), separators=(",", ":")),
    "gzip-encoded": lambda text: text,  # sent with Content-Encoding: gzip
}


def _post_json_with_curl(url: str, body: bytes, headers=()) -> tuple[int, str, str]:
    """POST like `curl -H 'Content-Type: application/json' --data-binary @-`; returns (status, type, body)."""
    extra = [arg for h in headers for arg in ("-H", h)]
    out = subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-X", "POST", "-H", "Content-Type: application/json", *extra,
         "--data-binary", "@-", "-o", "-", "-w", "\n%{http_code} %{content_type}", url],
        input=body, capture_output=True, timeout=20, check=True)
    text = out.stdout.decode()
    response_body, _, trailer = text.rpartition("\n")
    status, _, content_type = trailer.partition(" ")
    return int(status), content_type, response_body


@pytest.mark.parametrize("variant", list(JSON_VARIANTS))
@pytest.mark.parametrize("signal", ["traces", "metrics", "logs"])
def test_fidelity_otlp_json_spec_examples(sink, run_sluice, signal, variant):
    body = JSON_VARIANTS[variant](SPEC_JSON[signal])
    expected = parse_otlp_json(json.loads(SPEC_JSON[signal]), REQUEST_TYPES[signal])
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink), signals=[signal])) as proc:
        data, headers = body.encode(), []
        if variant == "gzip-encoded":
            data, headers = gzip.compress(data), ["Content-Encoding: gzip"]
        status, content_type, response_body = _post_json_with_curl(f"{setup.http_url}/v1/{signal}", data, headers)
        assert status == 200, f"{status} {response_body}\n{proc.describe()}"
        assert content_type.split(";")[0].strip() == "application/json"
        response = json.loads(response_body)
        assert isinstance(response, dict)
        rejected = (response.get("partialSuccess") or {})
        assert not any(int(v) for k, v in rejected.items() if k.startswith("rejected")), response
        n = wait_exact(sink, signal, SPEC_ITEMS[signal], TIMEOUT)
        assert n == SPEC_ITEMS[signal], f"sink got {n} items\n{proc.describe()}"
    received = snapshot(sink, signal)
    assert_same_items(FLATTEN[signal](received), FLATTEN[signal]([expected]), f"{signal} JSON ({variant})")

    # Spot checks against the literal example, independent of the JSON->proto helper.
    if signal == "traces":
        rs = received[0].resource_spans[0]
        span = rs.scope_spans[0].spans[0]
        assert span.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
        assert span.span_id == bytes.fromhex("eee19b7ec3c1b174")
        assert span.parent_span_id == bytes.fromhex("eee19b7ec3c1b173")
        assert (span.name, span.kind) == ("I'm a server span", 2)
        assert (span.start_time_unix_nano, span.end_time_unix_nano) == (1544712660000000000, 1544712661000000000)
        assert [(a.key, a.value.string_value) for a in span.attributes] == [("my.span.attr", "some value")]
        assert rs.scope_spans[0].scope.name == "my.library" and rs.scope_spans[0].scope.version == "1.0.0"
        assert rs.resource.attributes[0].value.string_value == "my.service"
    elif signal == "logs":
        rec = received[0].resource_logs[0].scope_logs[0].log_records[0]
        assert rec.trace_id == bytes.fromhex("5b8efff798038103d269b633813fc60c")
        assert rec.span_id == bytes.fromhex("eee19b7ec3c1b174")
        assert rec.body.string_value == "Example log record" and rec.severity_text == "Information"
        attrs = {a.key: a.value for a in rec.attributes}
        assert attrs["int.attribute"].int_value == 10 and attrs["double.attribute"].double_value == 637.704
        assert attrs["boolean.attribute"].bool_value is True
        assert [v.string_value for v in attrs["array.attribute"].array_value.values] == ["many", "values"]
        assert attrs["map.attribute"].kvlist_value.values[0].key == "some.map.key"
    else:
        metrics = {m.name: m for m in received[0].resource_metrics[0].scope_metrics[0].metrics}
        assert sorted(metrics) == ["my.counter", "my.gauge", "my.histogram"]
        assert metrics["my.counter"].sum.is_monotonic and metrics["my.counter"].sum.aggregation_temporality == 1
        assert metrics["my.counter"].sum.data_points[0].as_double == 5.0
        assert metrics["my.gauge"].gauge.data_points[0].as_double == 10.0
        h = metrics["my.histogram"].histogram.data_points[0]
        assert (h.count, h.sum, list(h.bucket_counts), list(h.explicit_bounds), h.min, h.max) == (
            3, 3.0, [1, 1, 1], [1.0], 1.0, 1.0)


def _drop_attribute(value, key):
    """`value` without any {"key": key, ...} entry in any list (OTLP attributes)."""
    if isinstance(value, dict):
        return {k: _drop_attribute(v, key) for k, v in value.items()}
    if isinstance(value, list):
        return [_drop_attribute(v, key) for v in value if not (isinstance(v, dict) and v.get("key") == key)]
    return value


@pytest.mark.parametrize("signal", ["traces", "logs", "metrics"])
def test_fidelity_otlp_json_rich_payloads(sink, run_sluice, sdk_payloads, signal):
    """The SDK's telemetry (every field and value type) written as canonical OTLP/JSON: hex ids
    (also in links and exemplars), base64 bytes, int64 as strings, enums as integers. It must
    decode to exactly the protobuf it came from. (Non-finite doubles: see the next test.)"""
    message = encode_sdk(signal, sdk_payloads[signal])
    payload = _drop_attribute(to_otlp_json(message), "double.inf")
    body = json.dumps(payload, ensure_ascii=False).encode()
    assert b"bytesValue" in body and b'"intValue": "-9223372036854775808"' in body
    want = _drop_attribute(FLATTEN[signal]([message]), "double.inf")
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink), signals=[signal])) as proc:
        resp = requests.post(f"{setup.http_url}/v1/{signal}", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
        assert resp.headers["Content-Type"].split(";")[0] == "application/json"
        n = wait_exact(sink, signal, len(want), TIMEOUT)
        assert n == len(want), f"sink got {n} items, expected {len(want)}\n{proc.describe()}"
    assert_same_items(FLATTEN[signal](snapshot(sink, signal)), want, f"{signal} rich OTLP/JSON")


NON_FINITE_ATTRIBUTES = [
    {"key": "pos", "value": {"doubleValue": "Infinity"}},
    {"key": "neg", "value": {"doubleValue": "-Infinity"}},
    {"key": "nan", "value": {"doubleValue": "NaN"}},
    {"key": "arr", "value": {"arrayValue": {"values": [{"doubleValue": "Infinity"}, {"doubleValue": 1.5}]}}},
]


def _check_non_finite_attributes(attributes) -> None:
    attrs = {a.key: a.value for a in attributes}
    assert attrs["pos"].double_value == math.inf and attrs["neg"].double_value == -math.inf, attrs
    assert math.isnan(attrs["nan"].double_value), attrs
    assert [v.double_value for v in attrs["arr"].array_value.values] == [math.inf, 1.5], attrs


@pytest.mark.parametrize("where", ["metric-values", "metric-point-attributes", "span-attributes"])
def test_fidelity_otlp_json_non_finite_doubles(sink, run_sluice, where):
    """The protobuf JSON mapping writes non-finite doubles as the strings "NaN", "Infinity" and
    "-Infinity" (what MessageToJson and the collector emit); they must be accepted and kept."""
    signal = "traces" if where == "span-attributes" else "metrics"
    payload = json.loads(SPEC_JSON[signal])
    if signal == "traces":
        payload["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["attributes"] = NON_FINITE_ATTRIBUTES
    else:
        metrics = payload["resourceMetrics"][0]["scopeMetrics"][0]["metrics"]
        if where == "metric-values":
            metrics[1]["gauge"]["dataPoints"][0]["asDouble"] = "NaN"
            metrics[0]["sum"]["dataPoints"][0]["asDouble"] = "-Infinity"
        else:
            metrics[1]["gauge"]["dataPoints"][0]["attributes"] = NON_FINITE_ATTRIBUTES
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink), signals=[signal])) as proc:
        resp = requests.post(f"{setup.http_url}/v1/{signal}", json=payload, timeout=10)
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
        assert sink.wait_for(lambda: sink.request_count(signal) >= 1, TIMEOUT), proc.describe()
        time.sleep(0.3)
    if signal == "traces":
        assert sink.span_count() == 1
        _check_non_finite_attributes(sink.spans()[0].attributes)
        return
    got = {m.name: m for m in sink.metrics[0].resource_metrics[0].scope_metrics[0].metrics}
    assert sink.datapoint_count() == 3, f"{sink.datapoint_count()} data points arrived, 3 sent:\n{sink.metrics}"
    gauge = got["my.gauge"].gauge.data_points[0]
    if where == "metric-values":
        assert gauge.WhichOneof("value") == "as_double" and math.isnan(gauge.as_double), gauge
        counter = got["my.counter"].sum.data_points[0]
        assert counter.WhichOneof("value") == "as_double" and counter.as_double == -math.inf, counter
    else:
        assert gauge.as_double == 10.0
        _check_non_finite_attributes(gauge.attributes)


# Doubles whose shortest round-trip decimal form needs a correctly rounded parser.
TRICKY_DOUBLES = [254.03099999999998, 0.30000000000000004, 13.370999999999999, 1101.6000000000001,
                  5e-324, 2.2250738585072014e-308, 1.7976931348623157e308, 0.1, -123456.789e-10,
                  9007199254740993.0, 1e23, 8.41e21]


def test_fidelity_otlp_json_doubles_are_exact(sink, run_sluice):
    """A JSON number for a double field must decode to the double it denotes (correct rounding)."""
    payload = json.loads(SPEC_METRICS_JSON)
    gauge = payload["resourceMetrics"][0]["scopeMetrics"][0]["metrics"][1]["gauge"]
    template = gauge["dataPoints"][0]
    gauge["dataPoints"] = [dict(template, asDouble=v, attributes=[
        {"key": "i", "value": {"intValue": str(i)}}, {"key": "d", "value": {"doubleValue": v}}])
        for i, v in enumerate(TRICKY_DOUBLES)]
    body = json.dumps(payload)  # Python writes the shortest repr that round-trips
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink), signals=["metrics"])) as proc:
        resp = requests.post(f"{setup.http_url}/v1/metrics", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert resp.status_code == 200, resp.text
        expected_points = 2 + len(TRICKY_DOUBLES)
        assert wait_exact(sink, "metrics", expected_points, TIMEOUT) == expected_points, proc.describe()
    points = [p for req in sink.metrics for rm in req.resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics if m.name == "my.gauge" for p in m.gauge.data_points]
    got = {p.attributes[0].value.int_value: (p.as_double, p.attributes[1].value.double_value) for p in points}
    wrong = [f"{v!r} -> value {got[i][0]!r}, attribute {got[i][1]!r}"
             for i, v in enumerate(TRICKY_DOUBLES) if got.get(i) != (v, v)]
    assert not wrong, "doubles altered by OTLP/JSON decoding: " + "; ".join(wrong)


def test_fidelity_otlp_json_unknown_fields_ignored_and_empty_ids(sink, run_sluice):
    """OTLP/JSON receivers MUST ignore fields with unknown names; empty hex ids mean no id."""
    payload = json.loads(SPEC_LOGS_JSON)
    payload["someFutureField"] = {"x": [1, 2]}
    payload["resourceLogs"][0]["resource"]["futureResourceField"] = "ignored"
    record = payload["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]
    record["futureLogField"] = 42
    record["traceId"], record["spanId"] = "", ""
    expected = json.loads(SPEC_LOGS_JSON)
    del expected["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["traceId"]
    del expected["resourceLogs"][0]["scopeLogs"][0]["logRecords"][0]["spanId"]
    want = FLATTEN["logs"]([parse_otlp_json(expected, ExportLogsServiceRequest)])
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink), signals=["logs"])) as proc:
        resp = requests.post(f"{setup.http_url}/v1/logs", json=payload, timeout=10)
        assert resp.status_code == 200, f"{resp.status_code} {resp.text}"
        n = wait_exact(sink, "logs", 1, TIMEOUT)
        assert n == 1, proc.describe()
    assert_same_items(FLATTEN["logs"](snapshot(sink, "logs")), want, "logs with unknown fields")
    rec = sink.log_records()[0]
    assert rec.trace_id == b"" and rec.span_id == b""


BAD_JSON = {
    "truncated": ("traces", b'{"resourceSpans": [ {'),
    "not-json": ("logs", b"not json at all"),
    "not-otlp": ("metrics", b'{"resourceMetrics": "not a list"}'),  # valid JSON, not OTLP
    "bad-hex-id": ("traces", b'{"resourceSpans":[{"scopeSpans":[{"spans":[{"traceId":"zz","spanId":"eee19b7ec3c1b174"}]}]}]}'),
    # Invalid values inside a metric's data: must be refused, not silently dropped.
    "metric-bad-asint": ("metrics", b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":'
                b'[{"timeUnixNano":"1","asInt":"not-a-number"}]}}]}]}]}'),
    "metric-point-bad-attribute": ("metrics", b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"g","gauge":{"dataPoints":'
                b'[{"timeUnixNano":"1","asInt":"1","attributes":[{"key":"k","value":{"intValue":"x"}}]}]}}]}]}]}'),
    "histogram-bad-bucket-count": ("metrics", b'{"resourceMetrics":[{"scopeMetrics":[{"metrics":[{"name":"h","histogram":'
                                   b'{"aggregationTemporality":2,"dataPoints":[{"timeUnixNano":"1","count":"1",'
                                   b'"bucketCounts":["x"]}]}}]}]}]}'),
}


@pytest.mark.parametrize("case", list(BAD_JSON))
def test_fidelity_otlp_json_invalid_is_400_with_json_error(sink, run_sluice, case):
    signal, body = BAD_JSON[case]
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink))):
        resp = requests.post(f"{setup.http_url}/v1/{signal}", data=body,
                             headers={"Content-Type": "application/json"}, timeout=10)
        assert resp.status_code == 400, resp.text
        assert resp.headers["Content-Type"].split(";")[0] == "application/json"
        error = resp.json()
        assert isinstance(error.get("message"), str) and error["message"].strip(), error
        # A good request still goes through afterwards.
        ok = requests.post(f"{setup.http_url}/v1/traces", data=SPEC_TRACE_JSON,
                           headers={"Content-Type": "application/json"}, timeout=10)
        assert ok.status_code == 200, ok.text
        assert sink.wait_for(lambda: sink.span_count() >= 1, TIMEOUT)
        time.sleep(0.3)
    assert sink.span_count() == 1 and sink.log_count() == 0 and sink.datapoint_count() == 0


@pytest.mark.parametrize("content_type", ["text/plain", "application/xml", None])
def test_fidelity_otlp_http_wrong_content_type_is_415(sink, run_sluice, content_type):
    setup = SluiceSetup()
    with run_sluice(setup.config(otlp_exporter(sink))):
        headers = {"Content-Type": content_type} if content_type else {}
        resp = requests.post(f"{setup.http_url}/v1/traces", data=SPEC_TRACE_JSON.encode(), headers=headers,
                             timeout=10)
        if content_type is None:  # requests sends no Content-Type for bytes
            assert "Content-Type" not in resp.request.headers
        assert resp.status_code == 415, resp.text
        time.sleep(0.3)
    assert sink.span_count() == 0


# ---- sluice validate -------------------------------------------------------------------

VALID_CONFIG = """\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc}
      http:
        endpoint: 127.0.0.1:{http}
processors:
  batch:
    timeout: 200ms
  memory_limiter:
    check_interval: 1s
    limit_mib: 256
exporters:
  otlp:
    endpoint: 127.0.0.1:{sink}
    tls:
      insecure: true
  debug:
service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [memory_limiter, batch]
      exporters: [otlp]
    logs:
      receivers: [otlp]
      processors: [batch]
      exporters: [debug]
  telemetry:
    metrics:
      address: 127.0.0.1:{metrics}
"""


def _validate(sluice_bin, path):
    return subprocess.run([str(sluice_bin), "validate", "--config", str(path)], capture_output=True, text=True,
                          timeout=20, env={"NO_COLOR": "1", "PATH": "/usr/bin:/bin"})


def test_fidelity_validate_valid_config_prints_pipeline_graph(sluice_bin, tmp_path):
    path = tmp_path / "valid.yaml"
    path.write_text(VALID_CONFIG.format(grpc=14317, http=14318, sink=14319, metrics=18889))
    out = _validate(sluice_bin, path)
    assert out.returncode == 0, out.stderr
    assert "pipeline traces: [otlp] -> [memory_limiter, batch] -> [otlp]" in out.stdout, out.stdout
    assert "pipeline logs: [otlp] -> [batch] -> [debug]" in out.stdout, out.stdout
    assert "error" not in out.stderr.lower(), out.stderr


def test_fidelity_validate_typo_names_file_line_column_path_and_suggestion(sluice_bin, tmp_path):
    text = VALID_CONFIG.format(grpc=14317, http=14318, sink=14319, metrics=18889)
    text = text.replace("      grpc:\n        endpoint:", "      grpc:\n        endpont:", 1)
    lines = text.splitlines()
    line_no = next(i for i, line in enumerate(lines, 1) if "endpont:" in line)
    column = lines[line_no - 1].index("endpont") + 1
    path = tmp_path / "typo.yaml"
    path.write_text(text)
    out = _validate(sluice_bin, path)
    assert out.returncode == 64, (out.returncode, out.stdout, out.stderr)
    err = out.stderr
    assert f"{path}:{line_no}:{column}" in err, err
    assert "receivers.otlp.protocols.grpc.endpont" in err, err
    assert "did you mean `endpoint`" in err, err
    assert "pipeline traces" not in out.stdout  # no graph for an invalid config
