"""Real third-party OTLP senders and receivers talking to sluice.

* rotel's OTLP exporter (gRPC, and HTTP; it always gzips) -> sluice -> sink, with the
  Python SDK feeding rotel: every span, log record and data point arrives unchanged.
* otelcol-contrib (filelog -> otlphttp, gzip) -> sluice's HTTP receiver -> sink: every
  line arrives with its body intact.
* sluice's otlp exporter (gRPC) -> rotel's receiver -> sink: everything arrives.

rotel was checked (SDK -> rotel -> sink) to pass this data through unchanged, so what
arrives is compared with the SDK's own encoding of what it exported.
"""

from __future__ import annotations

import pytest

from fidelity_util import (
    FLATTEN,
    SluiceSetup,
    assert_same_items,
    build_sdk_payloads,
    encode_sdk,
    otlp_exporter,
    sdk_export,
    snapshot,
    wait_exact,
)
from peers import free_port, start_otelcol, start_rotel

TIMEOUT = 20.0
SIGNALS = ("traces", "logs", "metrics")
SELF_METRIC = {"traces": "spans", "metrics": "metric_points", "logs": "log_records"}


@pytest.fixture(scope="module")
def sdk_payloads():
    return build_sdk_payloads()


def _expected(sdk_payloads) -> dict[str, list[dict]]:
    return {s: FLATTEN[s]([encode_sdk(s, sdk_payloads[s])]) for s in SIGNALS}


def _wait_all(sink, expected, procs) -> None:
    for signal in SIGNALS:
        n = wait_exact(sink, signal, len(expected[signal]), TIMEOUT, settle=0.0)
        assert n >= len(expected[signal]), (
            f"sink got {n} {signal} items, expected {len(expected[signal])}\n"
            + "\n".join(p.describe() for p in procs))


def _assert_all_arrived(sink, expected) -> None:
    for signal in SIGNALS:
        assert_same_items(FLATTEN[signal](snapshot(sink, signal)), expected[signal], f"{signal}")


@pytest.mark.parametrize("rotel_protocol", ["grpc", "http"])
def test_peers_into_sluice_rotel_exporter(sink, run_sluice, tmp_path, sdk_payloads, rotel_protocol):
    expected = _expected(sdk_payloads)
    setup = SluiceSetup()
    rotel_grpc, rotel_http = free_port(), free_port()
    target = setup.grpc_endpoint if rotel_protocol == "grpc" else setup.http_url
    with run_sluice(setup.config(otlp_exporter(sink))) as sluice, \
            start_rotel(rotel_grpc, rotel_http, target, rotel_protocol, log_dir=tmp_path,
                        extra_args=["--batch-timeout", "100ms"]) as rotel:
        for signal in SIGNALS:
            sdk_export(signal, sdk_payloads[signal], "grpc", f"127.0.0.1:{rotel_grpc}", f"http://127.0.0.1:{rotel_http}")
        _wait_all(sink, expected, [sluice, rotel])
        rotel.stop()  # flushes rotel; nothing more may arrive
        sink.wait_for(lambda: False, 0.3)
        _assert_all_arrived(sink, expected)
        # It really came through sluice's receiver on rotel's transport.
        for signal in SIGNALS:
            accepted = setup.self_metric(f"otelcol_receiver_accepted_{SELF_METRIC[signal]}_total",
                                         receiver="otlp", transport=rotel_protocol)
            assert accepted == len(expected[signal]), f"sluice accepted {accepted} {signal} over {rotel_protocol}"
            refused = setup.self_metric(f"otelcol_receiver_refused_{SELF_METRIC[signal]}_total", receiver="otlp")
            assert not refused, f"sluice refused {refused} {signal}"
    assert {r.transport for r in sink.requests} == {"grpc"}
    assert all(r.status == 0 for r in sink.requests)


# Lines that must survive filelog -> otlphttp(gzip) -> sluice -> sink byte for byte.
# (filelog trims leading/trailing whitespace by default, so no line has any.)
SPECIAL_LINES = [
    "plain ascii line",
    'json-looking {"level":"info","msg":"hello \\"world\\"","n":1}',
    "unicode: héllo wörld ✓ 日本語 中文 한국어 \U0001F680\U0001F600",
    "tabs\tinside\tthe\tline",
    "backslashes \\ \\\\ \\n (literal, not a newline)",
    "quotes ' \" ` and <xml attr='1'/> & ampersand",
    "control chars \x01\x02\x7f in the middle",
    "x" * 20000,  # a long line, several gzip blocks
]


def test_peers_into_sluice_otelcol_filelog_otlphttp_gzip(sink, run_sluice, tmp_path):
    lines = SPECIAL_LINES + [f"line {i:05d} of the filelog test ✓ {'abc' * (i % 40)} end" for i in range(2000)]
    log_file = tmp_path / "app.log"
    log_file.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    setup = SluiceSetup()
    otelcol_config = f"""
receivers:
  filelog:
    include: [{log_file}]
    start_at: beginning
processors:
  batch:
    timeout: 100ms
    send_batch_size: 500
exporters:
  otlphttp:
    endpoint: {setup.http_url}
    compression: gzip
    retry_on_failure:
      initial_interval: 100ms
      max_interval: 500ms
service:
  pipelines:
    logs:
      receivers: [filelog]
      processors: [batch]
      exporters: [otlphttp]
"""
    with run_sluice(setup.config(otlp_exporter(sink), signals=["logs"])) as sluice, \
            start_otelcol(otelcol_config, log_dir=tmp_path) as otelcol:
        n = wait_exact(sink, "logs", len(lines), TIMEOUT)
        assert n == len(lines), f"sink got {n} log records, expected {len(lines)}\n{sluice.describe()}\n{otelcol.describe()}"
        accepted = setup.self_metric("otelcol_receiver_accepted_log_records_total", receiver="otlp", transport="http")
        assert accepted == len(lines), f"sluice accepted {accepted} log records over http"
    records = sink.log_records()
    bodies = [r.body.string_value for r in records]
    assert all(r.body.WhichOneof("value") == "string_value" for r in records)
    missing = sorted(set(lines) - set(bodies))
    altered = sorted(set(bodies) - set(lines))
    assert not missing and not altered, f"missing: {[m[:80] for m in missing[:5]]}, altered: {[a[:80] for a in altered[:5]]}"
    assert sorted(bodies) == sorted(lines)  # no duplicates either
    for r in records:
        attrs = {a.key: a.value.string_value for a in r.attributes}
        assert attrs.get("log.file.name") == "app.log", attrs
        assert r.observed_time_unix_nano > 0
    # otelcol's scope survives too.
    scopes = {sl.scope.name for req in sink.logs for rl in req.resource_logs for sl in rl.scope_logs}
    assert len(scopes) == 1


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_peers_into_sluice_sluice_exports_to_rotel(sink, run_sluice, tmp_path, sdk_payloads, compression):
    expected = _expected(sdk_payloads)
    rotel_grpc, rotel_http = free_port(), free_port()
    setup = SluiceSetup()
    exporters = {"otlp": {**otlp_exporter(sink, compression)["otlp"], "endpoint": f"127.0.0.1:{rotel_grpc}"}}
    with start_rotel(rotel_grpc, rotel_http, sink.grpc_endpoint, "grpc", log_dir=tmp_path,
                     extra_args=["--batch-timeout", "100ms"]) as rotel, \
            run_sluice(setup.config(exporters)) as sluice:
        for signal in SIGNALS:
            # traces over gRPC, logs and metrics over HTTP into sluice
            sdk_export(signal, sdk_payloads[signal], "grpc" if signal == "traces" else "http",
                       setup.grpc_endpoint, setup.http_url)
        _wait_all(sink, expected, [sluice, rotel])
        sink.wait_for(lambda: False, 0.3)
        _assert_all_arrived(sink, expected)
        for signal in SIGNALS:
            sent = setup.self_metric(f"otelcol_exporter_sent_{SELF_METRIC[signal]}_total", exporter="otlp")
            failed = setup.self_metric(f"otelcol_exporter_send_failed_{SELF_METRIC[signal]}_total", exporter="otlp")
            assert sent == len(expected[signal]) and not failed, f"{signal}: sent={sent} failed={failed}"
