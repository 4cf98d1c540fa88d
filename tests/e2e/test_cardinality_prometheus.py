"""Stripping a 10,000-value label with the `cardinality` processor, end to end against real Prometheus.

A Python `prometheus_client` app (its own registry, on a free loopback port) exposes a counter
`app_requests_total{route, user_id}` and a histogram `app_latency_seconds{route, user_id}`, with
10,000 distinct `user_id`s (one route each). sluice scrapes it every second (`prometheus`
receiver), drops `user_id` (`cardinality`, 1 s flush) and remote-writes to a real Prometheus
(Debian `prometheus --web.enable-remote-write-receiver`, started here on a loopback port).
While sluice runs, the app adds known amounts to every series over several rounds.

Checked through Prometheus' HTTP API, against totals the test computes from the app's own
registry: the series exist without `user_id`; every sample Prometheus holds for a route equals
the app's true total for that route at some moment (no double counting, no lost counts, no
partial sums), never decreases and never repeats a timestamp; after the last round
`sum(app_requests_total)` and the histogram's per-`le` buckets, `_count` and `_sum` equal the
app's; `sum(rate(...[30s]))` is non-zero and close to the app's own rate;
`histogram_quantile(0.5, ...)` is finite and where the known observations put it; Prometheus
refused nothing (its log has no out-of-order / duplicate-sample errors, its TSDB counted no
out-of-order or out-of-bounds samples, no remote-write request got a 4xx/5xx).

Rendering 10,000 x 2 series with prometheus_client takes ~2 s, longer than the 1 s scrape
interval, so the app renders its exposition (with prometheus_client's own OpenMetrics / text
encoders) once per round and serves that snapshot; each snapshot is consistent, so its totals
are exactly known. A missing peer fails the test, never skips it.
"""

from __future__ import annotations

import gzip
import math
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import exposition as text_exposition
from prometheus_client.openmetrics import exposition as om_exposition
from prometheus_client.parser import text_string_to_metric_families

from peers import HOST, Proc, free_port
from test_prometheus import BAD_LOG_PATTERNS, peer_binary, query, scalar, wait_until

USERS = 10_000
ROUTES = ("/checkout", "/search")
BUCKETS = (0.1, 0.5, 1.0)  # + Inf
ROUNDS = 5                 # increment rounds while sluice scrapes (plus the initial one)
PUBLISH_GAP = 1.2          # seconds a snapshot stays up after rendering, >= one scrape
SCRAPE_SERIES = ("up", "scrape_duration_seconds", "scrape_samples_scraped",
                 "scrape_samples_post_metric_relabeling", "scrape_series_added")


def route_of(i: int) -> str:
    return ROUTES[i % 2]


def increment_of(i: int) -> int:
    return 1 + i % 3


def latency_of(i: int) -> float:
    # 25% at 0.05 s, 50% at 0.3 s, 25% at 2.0 s: the median lies in (0.1, 0.5], at 0.3 by interpolation.
    return (0.05, 0.3, 0.3, 2.0)[i % 4]


class Snapshot:
    def __init__(self, version: int, openmetrics: bytes, registry: CollectorRegistry):
        self.version, self.openmetrics, self.registry = version, openmetrics, registry
        self._lock = threading.Lock()
        self._cache: dict[tuple[bool, bool], bytes] = {}

    def body(self, want_openmetrics: bool, want_gzip: bool) -> bytes:
        with self._lock:
            key = (want_openmetrics, want_gzip)
            if key not in self._cache:
                if want_openmetrics:
                    raw = self.openmetrics
                else:  # not what sluice asks for; rendered on demand (slow, but still the same snapshot)
                    raw = self._cache.get((False, False)) or text_exposition.generate_latest(self.registry)
                    self._cache[(False, False)] = raw
                self._cache[key] = gzip.compress(raw, 1) if want_gzip else raw
            return self._cache[key]


class CardinalityApp:
    """prometheus_client metrics with a 10,000-value `user_id`, served as per-round snapshots.

    `history` holds, per published snapshot: (wall time published, {route: counter total}).
    """

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("app_requests", "Requests served.", ["route", "user_id"], registry=self.registry)
        self.latency = Histogram("app_latency_seconds", "Request latency.", ["route", "user_id"],
                                 registry=self.registry, buckets=BUCKETS)
        self.counters = [self.requests.labels(route=route_of(i), user_id=f"user-{i:05d}") for i in range(USERS)]
        self.histograms = [self.latency.labels(route=route_of(i), user_id=f"user-{i:05d}") for i in range(USERS)]
        self.rounds = 0
        self.history: list[tuple[float, dict[str, float]]] = []
        self.snapshot: Snapshot | None = None
        self.scrapes = 0
        self.round()  # every series exists (with its `_created`) before sluice's first scrape

        app = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_GET(self):
                snap = app.snapshot
                accept = self.headers.get("Accept", "")
                want_om = "application/openmetrics-text" in accept
                want_gzip = "gzip" in self.headers.get("Accept-Encoding", "")
                body = snap.body(want_om, want_gzip)
                app.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", om_exposition.CONTENT_TYPE_LATEST if want_om
                                 else text_exposition.CONTENT_TYPE_LATEST)
                if want_gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.port = free_port()
        self.server = ThreadingHTTPServer((HOST, self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def round(self) -> None:
        """Add a known amount to every series, render the exposition and publish it."""
        for i in range(USERS):
            self.counters[i].inc(increment_of(i))
            self.histograms[i].observe(latency_of(i))
        self.rounds += 1
        snap = Snapshot(self.rounds, om_exposition.generate_latest(self.registry), self.registry)
        self.snapshot = snap
        self.history.append((time.time(), self.route_totals()))

    # The app's own totals, read back from its registry.
    def route_totals(self) -> dict[str, float]:
        totals = dict.fromkeys(ROUTES, 0.0)
        for metric in self.registry.collect():
            if metric.name == "app_requests":
                for s in metric.samples:
                    if s.name == "app_requests_total":
                        totals[s.labels["route"]] += s.value
        return totals

    def histogram_totals(self) -> tuple[dict[float, float], float, float]:
        buckets: dict[float, float] = {}
        count = total = 0.0
        for metric in self.registry.collect():
            if metric.name == "app_latency_seconds":
                for s in metric.samples:
                    if s.name == "app_latency_seconds_bucket":
                        le = float(s.labels["le"])
                        buckets[le] = buckets.get(le, 0.0) + s.value
                    elif s.name == "app_latency_seconds_count":
                        count += s.value
                    elif s.name == "app_latency_seconds_sum":
                        total += s.value
        return buckets, count, total

    def close(self):
        self.server.shutdown()


def metrics_of(port: int) -> dict[str, list]:
    """A Prometheus-format /metrics page as {sample name: [(labels, value)]}."""
    text = requests.get(f"http://{HOST}:{port}/metrics", timeout=5).text
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def total_of(samples: dict[str, list], name: str, **match) -> float:
    return sum(v for labels, v in samples.get(name, [])
               if all(labels.get(k) == want for k, want in match.items()))


def test_drop_user_id_and_remote_write_to_real_prometheus(run_sluice, tmp_path):
    prometheus = peer_binary("prometheus")
    started = time.monotonic()
    app = CardinalityApp()
    prom_port, telemetry_port = free_port(), free_port()
    (tmp_path / "prometheus.yml").write_text("global:\n  scrape_interval: 1h\nscrape_configs: []\n")
    config = f"""
receivers:
  prometheus:
    config:
      scrape_configs:
        - job_name: app
          scrape_interval: 1s
          scrape_timeout: 1s
          static_configs: [{{targets: ['{HOST}:{app.port}']}}]
processors:
  cardinality:
    drop_labels: [user_id]
    flush_interval: 1s
exporters:
  prometheusremotewrite:
    endpoint: http://{HOST}:{prom_port}/api/v1/write
service:
  pipelines:
    metrics:
      receivers: [prometheus]
      processors: [cardinality]
      exporters: [prometheusremotewrite]
  telemetry:
    metrics:
      address: {HOST}:{telemetry_port}
"""
    prom = Proc([prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", "--web.enable-remote-write-receiver",
                 f"--web.listen-address={HOST}:{prom_port}", f"--storage.tsdb.path={tmp_path / 'tsdb'}"],
                tmp_path / "prometheus.log", name="prometheus", ports=[prom_port], start_timeout=30)
    try:
        with prom, run_sluice(config, ports=[telemetry_port], ready_pattern="Everything is ready") as sluice:
            logs = (sluice, prom)

            def requests_total() -> float | None:
                return scalar(prom_port, 'sum(app_requests_total{job="app"})')

            def settle(what: str, want: float, timeout: float) -> None:
                """Wait until sum(app_requests_total) == want; on timeout fail with what sluice saw."""
                deadline = time.monotonic() + timeout
                got = None
                while time.monotonic() < deadline:
                    got = requests_total()
                    if got == want:
                        return
                    time.sleep(0.5)
                routes = {r["metric"]["route"]: float(r["value"][1]) for r in
                          query(prom_port, 'sum by (route) (app_requests_total{job="app"})')}
                sm = metrics_of(telemetry_port)
                pytest.fail(
                    f"{what}: sum(app_requests_total) in Prometheus is {got}, the app's total is {want} "
                    f"(target {HOST}:{app.port}) "
                    f"(per route: Prometheus {routes}, app {app.route_totals()}); sluice tracks "
                    f"{total_of(sm, 'sluice_processor_cardinality_source_series'):.0f} source series "
                    f"(the app has {2 * USERS} + {len(SCRAPE_SERIES)} scrape series), dropped points "
                    f"{ {labels['reason']: v for labels, v in sm.get('sluice_processor_cardinality_points_dropped_total', []) if v} }",
                    pytrace=False)

            # The first scrape arrives: the app's initial totals, exactly.
            wait_until("the first scrape in Prometheus", lambda: requests_total() is not None, timeout=30, logs=logs)
            first = sum(app.history[-1][1].values())
            settle("the first scrape", first, timeout=5)

            # Rounds of known increments while sluice scrapes every second.
            for _ in range(ROUNDS):
                app.round()
                time.sleep(PUBLISH_GAP)
            final_routes = app.route_totals()
            final = sum(final_routes.values())
            assert final == first + ROUNDS * sum(increment_of(i) for i in range(USERS))
            last_round_at = app.history[-1][0]

            settle("after the last round", final, timeout=20)
            time.sleep(3)  # more scrapes and flushes of unchanged data must change nothing
            got = requests_total()
            assert got == final, f"sum(app_requests_total) drifted to {got} (app total {final})"
            for route, want in final_routes.items():
                got = scalar(prom_port, f'sum(app_requests_total{{job="app",route="{route}"}})')
                assert got == want, f"route {route}: Prometheus {got}, app {want}"

            # No user_id anywhere; one series per route (plus the histogram's le).
            assert query(prom_port, 'count({__name__=~"app_.*", user_id!=""})') == []
            groups = query(prom_port, 'group by (user_id) ({__name__=~"app_.*"})')
            assert [g["metric"] for g in groups] == [{}], groups
            counts = {r["metric"]["__name__"]: float(r["value"][1])
                      for r in query(prom_port, 'count by (__name__) ({__name__=~"app_.*",job="app"})')}
            assert counts == {
                "app_requests_total": len(ROUTES),
                "app_latency_seconds_bucket": len(ROUTES) * (len(BUCKETS) + 1),
                "app_latency_seconds_count": len(ROUTES),
                "app_latency_seconds_sum": len(ROUTES),
            }, counts

            # Every stored sample of each route is the app's true total at some moment (the
            # snapshot scraped), the series never decrease and never repeat a timestamp.
            truths = {route: {totals[route] for _, totals in app.history} for route in ROUTES}
            stored = query(prom_port, 'app_requests_total{job="app"}[5m]')
            assert {s["metric"]["route"] for s in stored} == set(ROUTES), stored
            for series in stored:
                route = series["metric"]["route"]
                points = [(float(t), float(v)) for t, v in series["values"]]
                times = [t for t, _ in points]
                values = [v for _, v in points]
                assert times == sorted(set(times)), f"{route}: repeated or unordered timestamps {times}"
                assert values == sorted(values), f"{route}: the counter went down: {values}"
                wrong = [(t, v) for t, v in points if v not in truths[route]]
                assert not wrong, (f"{route}: samples that are no total the app ever had: {wrong[:10]} "
                                   f"(app totals per round: {sorted(truths[route])})")
                assert values[-1] == final_routes[route]
            assert scalar(prom_port, 'sum(resets(app_requests_total{job="app"}[5m]))') == 0.0

            # rate over 30 s: non-zero and close to the app's own rate over the same window.
            now = time.time()
            rate = scalar(prom_port, f'sum(rate(app_requests_total{{job="app"}}[30s]))')
            assert rate is not None and rate > 0 and math.isfinite(rate), rate

            def app_total_at(t: float) -> float:
                at = [sum(totals.values()) for when, totals in app.history if when <= t]
                return at[-1] if at else 0.0

            expected_rate = (app_total_at(now) - app_total_at(now - 30)) / 30
            assert expected_rate > 0, "the window holds no increments: the test ran too slowly"
            assert 0.6 * expected_rate <= rate <= 1.4 * expected_rate, (rate, expected_rate)
            rate_by_route = {r["metric"]["route"]: float(r["value"][1]) for r in
                             query(prom_port, 'sum by (route) (rate(app_requests_total{job="app"}[30s]))')}
            assert set(rate_by_route) == set(ROUTES) and all(v > 0 for v in rate_by_route.values()), rate_by_route

            # The histogram: per-le buckets, count and sum equal the app's.
            want_buckets, want_count, want_sum = app.histogram_totals()
            got_buckets = {float(r["metric"]["le"]): float(r["value"][1]) for r in
                           query(prom_port, 'sum by (le) (app_latency_seconds_bucket{job="app"})')}
            assert got_buckets == want_buckets, (got_buckets, want_buckets)
            assert scalar(prom_port, 'sum(app_latency_seconds_count{job="app"})') == want_count
            got_sum = scalar(prom_port, 'sum(app_latency_seconds_sum{job="app"})')
            assert math.isclose(got_sum, want_sum, rel_tol=1e-9), (got_sum, want_sum)
            q = scalar(prom_port, 'histogram_quantile(0.5, sum by (le) '
                                  '(rate(app_latency_seconds_bucket{job="app"}[30s])))')
            assert q is not None and math.isfinite(q), q
            assert 0.25 <= q <= 0.35, f"median {q}, expected ~0.3"

            # Prometheus refused nothing.
            prom_log = prom.log_text().lower()
            for pattern in BAD_LOG_PATTERNS:
                assert pattern not in prom_log, f"Prometheus logged {pattern!r}:\n{prom.describe(40)}"
            pm = metrics_of(prom_port)
            for name in ("prometheus_tsdb_out_of_order_samples_total", "prometheus_tsdb_out_of_bound_samples_total"):
                assert total_of(pm, name) == 0, f"{name} = {pm.get(name)}"
            write_codes = {labels["code"]: v for labels, v in pm.get("prometheus_http_requests_total", [])
                           if labels.get("handler") == "/api/v1/write" and v}
            assert set(write_codes) == {"204"}, f"remote-write responses by code: {write_codes}"

            # sluice: dropped user_id, failed nothing, logged no loss.
            sm = metrics_of(telemetry_port)
            assert total_of(sm, "sluice_processor_cardinality_labels_dropped_total") > 0, \
                sm.get("sluice_processor_cardinality_labels_dropped_total")
            # Every series the app exposes came in; they fold into 2 counters, 2 histograms and `up`/`scrape_*`.
            assert total_of(sm, "sluice_processor_cardinality_source_series") == 2 * USERS + len(SCRAPE_SERIES), \
                sm.get("sluice_processor_cardinality_source_series")
            assert total_of(sm, "sluice_processor_cardinality_active_series") == 2 * len(ROUTES) + len(SCRAPE_SERIES), \
                sm.get("sluice_processor_cardinality_active_series")
            for name in ("otelcol_exporter_send_failed_metric_points_total",
                         "otelcol_exporter_enqueue_failed_metric_points_total",
                         "sluice_processor_cardinality_points_dropped_total"):
                assert total_of(sm, name) == 0, f"{name} = {sm.get(name)}"
            sluice_log = sluice.log_text()
            for bad in ("Dropping data", "rejected", "Cannot decode"):
                assert bad not in sluice_log, sluice.describe(40)
            assert sluice.returncode is None, "sluice exited"
            print(f"app rounds {app.rounds}, scrapes served {app.scrapes}, last round "
                  f"{time.time() - last_round_at:.1f}s ago, rate {rate:.1f}/s (app {expected_rate:.1f}/s), "
                  f"median {q}, elapsed {time.monotonic() - started:.1f}s")
    finally:
        app.close()
