"""sluice's `prometheus` receiver and `prometheusremotewrite` exporter against real peers.

A real Prometheus (Debian `prometheus`, remote-write receiver on) is the backend, queried
through its HTTP API; a real `prometheus-node-exporter` and a Python `prometheus_client` app
(a counter and a histogram) are scraped every second. Three broken targets (one hangs, one
answers 500, one answers garbage) must show `up` 0 without disturbing the others. Missing
peers fail the test; they never skip it.
"""

from __future__ import annotations

import math
import shutil
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import make_wsgi_app
from wsgiref.simple_server import WSGIRequestHandler, make_server

from peers import HOST, Proc, free_port

BAD_LOG_PATTERNS = ("out of order", "out-of-order", "duplicate sample", "out of bounds")


def peer_binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} not found on PATH: install the Debian package "
                    f"(apt-get install {name}); .ci/run does this", pytrace=False)
    return path


class QuietWSGIHandler(WSGIRequestHandler):
    def log_message(self, *args):
        pass


class App:
    """A prometheus_client app with a counter and a histogram, served over HTTP."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("app_requests", "Requests served.", ["path"], registry=self.registry)
        self.latency = Histogram("app_latency_seconds", "Request latency.", registry=self.registry,
                                 buckets=(0.1, 0.25, 0.5, 1.0, 2.5))
        for path, n in (("/a", 42), ("/b", 58)):
            self.requests.labels(path=path).inc(n)
        for v in [0.05] * 10 + [0.3] * 10 + [2.0] * 5:
            self.latency.observe(v)
        self.port = free_port()
        self.server = make_server(HOST, self.port, make_wsgi_app(self.registry), handler_class=QuietWSGIHandler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def total(self) -> float:
        return sum(self.registry.get_sample_value("app_requests_total", {"path": p}) for p in ("/a", "/b"))

    def close(self):
        self.server.shutdown()


class BrokenHandler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/hang"):
            time.sleep(5)  # far beyond the scrape timeout
            return
        if self.path.startswith("/fail"):
            self.send_response(500)
            self.end_headers()
            self.wfile.write(b"internal error")
            return
        body = b"this {is not= the \"prometheus format\n\x00\x01"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


def query(prom_port: int, promql: str) -> list:
    r = requests.get(f"http://{HOST}:{prom_port}/api/v1/query", params={"query": promql}, timeout=5)
    r.raise_for_status()
    return r.json()["data"]["result"]


def scalar(prom_port: int, promql: str):
    result = query(prom_port, promql)
    return float(result[0]["value"][1]) if result else None


def wait_until(what: str, check, timeout: float = 30.0, logs=()):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = check()
            if last:
                return last
        except (requests.RequestException, KeyError, IndexError, ValueError) as e:
            last = e
        time.sleep(0.5)
    for proc in logs:
        print(proc.describe(60))
    pytest.fail(f"timed out waiting for {what} (last: {last!r})", pytrace=False)


def test_scrape_and_remote_write_to_real_prometheus(run_sluice, tmp_path):
    prometheus = peer_binary("prometheus")
    node_exporter = peer_binary("prometheus-node-exporter")
    prom_port, ne_port, broken_port = free_port(), free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")

    app = App()
    broken = ThreadingHTTPServer((HOST, broken_port), BrokenHandler)
    broken.daemon_threads = True
    threading.Thread(target=broken.serve_forever, daemon=True).start()

    def job(name: str, port: int, path: str = "/metrics", extra: str = "") -> str:
        return (f"        - job_name: {name}\n          scrape_interval: 1s\n          metrics_path: {path}\n{extra}"
                f"          static_configs: [{{targets: ['{HOST}:{port}']}}]\n")

    # The app is found through file_sd_configs (JSON, refreshed every second).
    sd_file = tmp_path / "sd" / "app.json"
    sd_file.parent.mkdir()
    sd_file.write_text(f'[{{"targets": ["{HOST}:{app.port}"], "labels": {{"team": "shop"}}}}]')
    app_job = (f"        - job_name: app\n          scrape_interval: 1s\n"
               f"          file_sd_configs: [{{files: ['{sd_file.parent}/*.json'], refresh_interval: 1s}}]\n")

    config = (
        "receivers:\n  prometheus:\n    config:\n      scrape_configs:\n"
        + job("node", ne_port)
        + app_job
        + job("hang", broken_port, "/hang", "          scrape_timeout: 500ms\n")
        + job("fail", broken_port, "/fail")
        + job("garbage", broken_port, "/garbage")
        + "processors:\n  batch: {timeout: 200ms}\n"
        + f"exporters:\n  prometheusremotewrite:\n    endpoint: http://{HOST}:{prom_port}/api/v1/write\n"
        + "service:\n  pipelines:\n    metrics: {receivers: [prometheus], processors: [batch], "
          "exporters: [prometheusremotewrite]}\n  telemetry: {metrics: {level: none}}\n"
    )

    prom = Proc([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", "--web.enable-remote-write-receiver",
                 f"--web.listen-address={HOST}:{prom_port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                tmp_path / "prometheus.log", name="prometheus", ports=[prom_port], start_timeout=30)
    ne = Proc([node_exporter, f"--web.listen-address={HOST}:{ne_port}"], tmp_path / "node-exporter.log",
              name="node-exporter", ports=[ne_port])
    try:
        with prom, ne, run_sluice(config, ports=[], ready_pattern="Everything is ready") as sluice:
            logs = (sluice, prom)
            instance = f"{HOST}:{ne_port}"
            # Node exporter series arrive with job and instance labels.
            wait_until("node-exporter series in Prometheus",
                       lambda: scalar(prom_port, f'count(node_cpu_seconds_total{{job="node",instance="{instance}"}})'),
                       logs=logs)
            # The app's counter sums to the app's own total; its histogram answers quantiles.
            total = app.total()
            wait_until("the app's counter total",
                       lambda: scalar(prom_port, 'sum(app_requests_total{job="app",team="shop"})') == total,
                       logs=logs)
            q = wait_until("histogram_quantile over the app's histogram",
                           lambda: scalar(prom_port, 'histogram_quantile(0.5, sum by (le) '
                                                     '(app_latency_seconds_bucket{job="app"}))'), logs=logs)
            assert 0.25 <= q <= 0.5, q
            # Each broken target is down; the healthy ones are up.
            for bad in ("hang", "fail", "garbage"):
                wait_until(f"up 0 for {bad}", lambda: scalar(prom_port, f'up{{job="{bad}"}}') == 0.0, logs=logs)
            for good in ("node", "app"):
                assert scalar(prom_port, f'up{{job="{good}"}}') == 1.0, good
            assert scalar(prom_port, 'min_over_time(up{job="node"}[1m])') == 1.0
            assert scalar(prom_port, 'min_over_time(up{job="app"}[1m])') == 1.0
            # The scrape_* series come along.
            assert scalar(prom_port, f'scrape_samples_scraped{{job="node",instance="{instance}"}}') > 100
            assert scalar(prom_port, 'scrape_duration_seconds{job="app"}') is not None
            # A few more rounds, then nothing Prometheus refused.
            time.sleep(3)
            assert scalar(prom_port, 'sum(app_requests_total{job="app"})') == total
            assert not math.isnan(scalar(prom_port, 'sum(rate(node_cpu_seconds_total{job="node"}[30s]))'))
            prom_log = prom.log_text().lower()
            for pattern in BAD_LOG_PATTERNS:
                assert pattern not in prom_log, f"Prometheus logged {pattern!r}:\n{prom.describe(40)}"
            sluice_log = sluice.log_text()
            assert "Dropping data" not in sluice_log, sluice.describe(40)
            assert "Scrape failed" in sluice_log  # the broken targets are reported
            # The app leaves the file_sd file: its series get stale markers, so Prometheus stops
            # returning them at once (not after its 5-minute lookback).
            sd_file.write_text("[]")
            wait_until("the removed target's series to go stale",
                       lambda: scalar(prom_port, 'count(app_requests_total{job="app"})') is None, logs=logs)
            assert scalar(prom_port, 'up{job="node"}') == 1.0
    finally:
        app.close()
        broken.shutdown()
