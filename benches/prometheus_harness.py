#!/usr/bin/env python3
"""Side-by-side: sluice vs Prometheus in agent mode, scraping the same exposition and
remote-writing to the same counting sink.

    exposition (static text, ~51k series) --scrape every --interval--> agent --remote write--> sink

The exposition is 500 counters x 100 label sets plus a 10-bucket histogram with 100 series,
rendered once and served as text/plain 0.0.4 (no gzip) from a separate Python process. The
sink (another process) answers 204 to every remote-write POST and counts requests and bytes.
Each agent runs alone (one after the other, so they do not compete for the CPU): after
--warmup seconds its CPU (utime+stime from /proc/<pid>/stat) is measured over --seconds, and
its peak RSS (VmHWM) is read at the end. Reported: CPU-seconds per scrape-and-forward and peak
RSS, and the ratio sluice/prometheus.

    python3 benches/prometheus_harness.py --sluice target/release/sluice --json /tmp/prom-bench.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

HOST = "127.0.0.1"
TICK = os.sysconf("SC_CLK_TCK")

EXPOSITION_SERVER = r'''
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
lines = []
for m in range(500):
    lines.append(f"# TYPE bench_counter_{m}_total counter")
    for s in range(100):
        lines.append(f'bench_counter_{m}_total{{pod="pod-{s}",path="/api/v1/items/{s % 7}"}} {m * 1000 + s}')
lines.append("# TYPE bench_latency_seconds histogram")
bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "+Inf"]
for s in range(100):
    for i, b in enumerate(bounds):
        lines.append(f'bench_latency_seconds_bucket{{pod="pod-{s}",le="{b}"}} {(i + 1) * 10}')
    lines.append(f'bench_latency_seconds_sum{{pod="pod-{s}"}} 42.5')
    lines.append(f'bench_latency_seconds_count{{pod="pod-{s}"}} 100')
body = ("\n".join(lines) + "\n").encode()
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
print(len(lines), len(body), flush=True)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''

SINK_SERVER = r'''
import sys, json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
stats = {"requests": 0, "bytes": 0}
class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_POST(self):
        n = int(self.headers.get("Content-Length", 0))
        self.rfile.read(n)
        stats["requests"] += 1
        stats["bytes"] += n
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def do_GET(self):
        body = json.dumps(stats).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H).serve_forever()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection((HOST, port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"port {port} not open after {timeout}s")


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def peak_rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def stop(p: subprocess.Popen) -> None:
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(15)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(5)


def sink_stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://{HOST}:{port}/", timeout=5) as r:
        return json.loads(r.read())


def run_agent(name, args, sink_port, warmup, seconds, interval, log_path):
    with open(log_path, "wb") as log:
        p = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        time.sleep(warmup)
        if p.poll() is not None:
            raise RuntimeError(f"{name} exited early; see {log_path}")
        before_cpu, before_sink = cpu_seconds(p.pid), sink_stats(sink_port)
        time.sleep(seconds)
        after_cpu, after_sink = cpu_seconds(p.pid), sink_stats(sink_port)
        rss = peak_rss_mib(p.pid)
    finally:
        stop(p)
    scrapes = seconds / interval
    return {
        "agent": name,
        "cpu_seconds": round(after_cpu - before_cpu, 3),
        "cpu_seconds_per_scrape": round((after_cpu - before_cpu) / scrapes, 4),
        "peak_rss_mib": round(rss, 1),
        "remote_write_requests": after_sink["requests"] - before_sink["requests"],
        "remote_write_bytes": after_sink["bytes"] - before_sink["bytes"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sluice", default="target/release/sluice")
    ap.add_argument("--prometheus", default=shutil.which("prometheus") or "prometheus")
    ap.add_argument("--interval", type=int, default=5)
    ap.add_argument("--warmup", type=float, default=12.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--json")
    ap.add_argument("--cardinality", action="store_true",
                    help="sluice runs the cardinality processor (the issue's example rules: drop `path`, "
                         "at most 2000 series per metric, 200 values per label in 10m, flushed every scrape); Prometheus drops "
                         "`path` with metric_relabel_configs, so both forward the same series")
    a = ap.parse_args()

    work = tempfile.mkdtemp(prefix="sluice-prom-bench-")
    expo_port, sink_port = free_port(), free_port()
    expo = subprocess.Popen([sys.executable, "-c", EXPOSITION_SERVER, str(expo_port)], stdout=subprocess.PIPE, text=True)
    sink = subprocess.Popen([sys.executable, "-c", SINK_SERVER, str(sink_port)])
    results = []
    try:
        series, size = expo.stdout.readline().split()
        wait_port(expo_port)
        wait_port(sink_port)
        target = f"{HOST}:{expo_port}"
        write_url = f"http://{HOST}:{sink_port}/api/v1/write"

        prom_cfg = os.path.join(work, "prometheus.yml")
        with open(prom_cfg, "w") as f:
            f.write(f"global: {{scrape_interval: {a.interval}s, scrape_timeout: {a.interval}s}}\n"
                    f"scrape_configs:\n  - job_name: bench\n    static_configs: [{{targets: ['{target}']}}]\n"
                    + ("    metric_relabel_configs: [{action: labeldrop, regex: path}]\n" if a.cardinality else "")
                    +
                    f"remote_write:\n  - url: {write_url}\n")
        prom_args = [a.prometheus, "--enable-feature=agent", f"--config.file={prom_cfg}",
                     f"--storage.agent.path={os.path.join(work, 'agent')}",
                     f"--web.listen-address={HOST}:{free_port()}"]
        results.append(run_agent("prometheus-agent", prom_args, sink_port, a.warmup, a.seconds, a.interval,
                                 os.path.join(work, "prometheus.log")))

        sluice_cfg = os.path.join(work, "sluice.yaml")
        with open(sluice_cfg, "w") as f:
            f.write("receivers:\n  prometheus:\n    config:\n      scrape_configs:\n"
                    f"        - job_name: bench\n          scrape_interval: {a.interval}s\n"
                    f"          static_configs: [{{targets: ['{target}']}}]\n"
                    "processors:\n  batch:\n"
                    + ("  cardinality:\n    drop_labels: [path]\n    max_series_per_metric: 2000\n"
                       "    max_values_per_label: 200\n    window: 10m\n"
                       # Every scrape forwarded, as Prometheus does (the default flush is 10s).
                       "    flush_interval: 0s\n" if a.cardinality else "")
                    +
                    f"exporters:\n  prometheusremotewrite:\n    endpoint: {write_url}\n"
                    "service:\n  pipelines:\n    metrics: {receivers: [prometheus], processors: ["
                    + ("cardinality, " if a.cardinality else "") + "batch], "
                    "exporters: [prometheusremotewrite]}\n  telemetry: {metrics: {level: none}}\n")
        results.append(run_agent("sluice", [a.sluice, "--config", sluice_cfg], sink_port, a.warmup, a.seconds,
                                 a.interval, os.path.join(work, "sluice.log")))
    finally:
        stop(expo)
        stop(sink)
    prom, sl = results
    report = {
        "exposition_lines": int(series),
        "exposition_bytes": int(size),
        "interval_s": a.interval,
        "cardinality": a.cardinality,
        "measured_s": a.seconds,
        "results": results,
        "cpu_ratio_sluice_over_prometheus": round(sl["cpu_seconds"] / max(prom["cpu_seconds"], 1e-9), 3),
        "rss_ratio_sluice_over_prometheus": round(sl["peak_rss_mib"] / max(prom["peak_rss_mib"], 1e-9), 3),
        "logs": work,
    }
    print(json.dumps(report, indent=2))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
