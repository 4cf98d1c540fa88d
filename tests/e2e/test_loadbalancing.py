"""The `loadbalancing` exporter end to end: sluice agents route spans by trace id to a tier
of sluice gateways running tail sampling, all on loopback, with Python OTLP sinks as the
gateways' backends (one sink per gateway, so a test knows which gateway forwarded what).

Gateways listen for OTLP/gRPC on 127.0.0.2, .3, .4 (and .5) with the same port, as pods of a
headless Service do on their own IPs. For the DNS resolver, each agent runs in its own mount
namespace (`unshare -m`, the tests run as root) where /etc/hosts is a file the test writes:
the agent resolves `sluice-gateway-headless` with the system resolver (tokio's lookup_host,
getaddrinfo), exactly as in a cluster, and the test changes the answer by rewriting the file.
No test-only configuration key is involved.
"""

from __future__ import annotations

import os
import random
import shutil
import threading
import time
from pathlib import Path

import pytest
import yaml

from peers import Proc, free_port
from robust_helpers import scrape
from sink import Sink
from tail_helpers import (STANDARD_POLICIES, STATUS_ERROR, Sender, build_traces, collector_probabilistic_sampled,
                          interleave, make_span, pack_requests)

DECISION_WAIT = 2.0
GATEWAY_IPS = ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"]
HOSTNAME = "sluice-gateway-headless"


class Gateway:
    """A sluice gateway (otlp -> tail_sampling -> batch -> otlp) in front of its own sink."""

    def __init__(self, ip: str, grpc_port: int, tmp_path: Path, sluice_bin: Path, n: int):
        self.ip, self.grpc_port = ip, grpc_port
        self.http, self.metrics = free_port(), free_port()
        self.endpoint = f"{ip}:{grpc_port}"
        self.sink = Sink().start()
        config = {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": self.endpoint},
                "http": {"endpoint": f"127.0.0.1:{self.http}"},
            }}},
            "processors": {
                "tail_sampling": {"decision_wait": f"{DECISION_WAIT:g}s", "policies": STANDARD_POLICIES},
                "batch": {"timeout": "100ms"},
            },
            "exporters": {"otlp": {"endpoint": self.sink.grpc_endpoint, "tls": {"insecure": True}}},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["tail_sampling", "batch"],
                                         "exporters": ["otlp"]}},
                "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics}"}},
            },
        }
        self.config_path = tmp_path / f"gateway-{n}.yaml"
        self.config_path.write_text(yaml.safe_dump(config, sort_keys=False))
        self.log = tmp_path / f"gateway-{n}.log"
        self.sluice_bin = sluice_bin
        self.proc: Proc | None = None

    def start(self) -> "Gateway":
        self.proc = Proc([self.sluice_bin, "--config", self.config_path], self.log, name=f"gateway {self.ip}",
                         ports=[self.http], env={"NO_COLOR": "1"}).start()
        return self

    def stop(self):
        if self.proc is not None:
            self.proc.stop()
            self.proc = None

    def close(self):
        self.stop()
        self.sink.stop()


class Agent:
    """A sluice agent: otlp -> batch -> loadbalancing. With `hosts`, it runs in its own mount
    namespace with that file bind-mounted over /etc/hosts."""

    def __init__(self, tmp_path: Path, sluice_bin: Path, n: int, resolver: dict, hosts: Path | None = None):
        self.grpc, self.http, self.metrics = free_port(), free_port(), free_port()
        config = {
            "receivers": {"otlp": {"protocols": {
                "grpc": {"endpoint": f"127.0.0.1:{self.grpc}"},
                "http": {"endpoint": f"127.0.0.1:{self.http}"},
            }}},
            "processors": {"batch": {"timeout": "100ms"}},
            "exporters": {"loadbalancing": {
                "routing_key": "traceID",
                "protocol": {"otlp": {
                    "tls": {"insecure": True},
                    "timeout": "2s",
                    "retry_on_failure": {"initial_interval": "100ms", "max_interval": "500ms"},
                }},
                "resolver": resolver,
            }},
            "service": {
                "pipelines": {"traces": {"receivers": ["otlp"], "processors": ["batch"],
                                         "exporters": ["loadbalancing"]}},
                "telemetry": {"metrics": {"address": f"127.0.0.1:{self.metrics}"}},
            },
        }
        path = tmp_path / f"agent-{n}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        args = [sluice_bin, "--config", path]
        if hosts is not None:
            unshare = shutil.which("unshare")
            assert unshare and os.geteuid() == 0, "the DNS tests need root and unshare(1) for a private /etc/hosts"
            args = [unshare, "-m", "sh", "-c", 'mount --bind "$0" /etc/hosts && exec "$1" --config "$2"',
                    hosts, sluice_bin, path]
        self.proc = Proc(args, tmp_path / f"agent-{n}.log", name=f"agent {n}", ports=[self.grpc, self.http],
                         env={"NO_COLOR": "1"}).start()
        self.sender = Sender(self.grpc, self.http)

    def scrape(self):
        return scrape(self.metrics)

    def close(self):
        self.sender.close()
        self.proc.stop()


@pytest.fixture
def cluster(tmp_path, sluice_bin):
    """Builds gateways and agents; stops everything at the end (printing logs on failure)."""
    made = {"gateways": [], "agents": []}

    class Cluster:
        grpc_port = free_port()

        def gateways(self, n: int, start: bool = True) -> list[Gateway]:
            out = []
            for i in range(n):
                g = Gateway(GATEWAY_IPS[i], self.grpc_port, tmp_path, sluice_bin, i)
                made["gateways"].append(g)
                out.append(g.start() if start else g)
            return out

        def agent(self, resolver: dict, hosts: Path | None = None) -> Agent:
            a = Agent(tmp_path, sluice_bin, len(made["agents"]), resolver, hosts)
            made["agents"].append(a)
            return a

    try:
        yield Cluster()
    except BaseException:
        raise
    finally:
        for a in made["agents"]:
            a.close()
        for g in made["gateways"]:
            g.close()


def spans_at(gateways: list[Gateway]) -> list[dict]:
    """Per gateway: {trace_id: {span_id, ...}} of what its sink received."""
    out = []
    for g in gateways:
        seen: dict = {}
        with g.sink._cond:
            for req in g.sink.traces:
                for rs in req.resource_spans:
                    for ss in rs.scope_spans:
                        for s in ss.spans:
                            seen.setdefault(s.trace_id, set()).add(s.span_id)
        out.append(seen)
    return out


def wait_quiet(gateways: list[Gateway], expect, timeout: float, quiet: float = 1.5):
    """Waits until `expect(spans_at(gateways))` holds, or nothing changed for `quiet` seconds
    after the deadline's share; returns the last view."""
    deadline = time.monotonic() + timeout
    last, last_change = None, time.monotonic()
    while time.monotonic() < deadline:
        view = spans_at(gateways)
        if expect(view):
            return view
        sizes = [sum(len(v) for v in g.values()) for g in view]
        if sizes != last:
            last, last_change = sizes, time.monotonic()
        time.sleep(0.2)
    return spans_at(gateways)


def owner_of(view: list[dict], trace_id: bytes, span_ids: set) -> int | None:
    """The one gateway that received all of `span_ids` of the trace (asserting no other got any)."""
    holders = [i for i, g in enumerate(view) if g.get(trace_id, set()) & span_ids]
    assert len(holders) <= 1, f"trace {trace_id.hex()} split over gateways {holders}"
    if not holders:
        return None
    assert span_ids <= view[holders[0]][trace_id], f"trace {trace_id.hex()} incomplete"
    return holders[0]


def test_traces_spread_over_agents_end_complete_at_one_gateway(cluster):
    gateways = cluster.gateways(3)
    static = {"static": {"hostnames": [g.endpoint for g in gateways]}}
    agents = [cluster.agent(static) for _ in range(3)]
    rng = random.Random(6)
    traces = build_traces(rng, n_traces=300, n_spans=6, n_error=30, n_slow=30, base_ns=time.time_ns())
    # Each trace's spans are spread over 6 consecutive requests, shuffled, and dealt round
    # robin over the three agents: every trace reaches all three agents, out of order.
    agent_of = {}
    for t in traces:
        off = rng.randrange(3)
        for k, (_, span) in enumerate(t.spans):
            agent_of[span.span_id] = (k + off) % 3
    requests_ = interleave(traces, n_requests=60, window=6, rng=rng)
    for items in requests_:
        for n, agent in enumerate(agents):
            mine = [it for it in items if agent_of[it[1].span_id] == n]
            if mine:
                agent.sender.send(pack_requests(mine, len(mine))[0])

    keep = {t.trace_id for t in traces
            if t.kind != "normal" or collector_probabilistic_sampled(t.trace_id, 10)}
    view = wait_quiet(gateways, lambda v: all(any(tid in g for g in v) for tid in keep), timeout=DECISION_WAIT + 20)
    received = {tid for g in view for tid in g}
    assert received == keep, (f"missing {len(keep - received)}, unexpected {len(received - keep)} "
                              f"of {len(keep)} kept traces")
    owners = [owner_of(view, t.trace_id, t.span_ids) for t in traces if t.trace_id in keep]
    assert None not in owners
    # Error and slow traces: every one, complete, at exactly one gateway (owner_of checked).
    special = [t for t in traces if t.kind != "normal"]
    assert all(t.trace_id in received for t in special)
    # Every gateway decided a fair share of all traces (by the decisions it took).
    decided = [scrape(g.metrics).value("otelcol_processor_tail_sampling_global_count_traces_sampled_total") for g in gateways]
    assert all(d >= 0.2 * len(traces) for d in decided), decided
    assert sum(decided) == len(traces), decided
    for a in agents:
        m = a.scrape()
        assert m.value("otelcol_loadbalancer_num_backends") == 3
        assert m.value("otelcol_exporter_send_failed_spans_total") == 0
        assert m.value("otelcol_exporter_sent_spans_total") > 0


def probe_traces(rng: random.Random, n: int) -> list[bytes]:
    return [rng.randbytes(16) for _ in range(n)]


def send_probes(agents: list[Agent], ids: list[bytes], tag: str) -> dict:
    """One ERROR span per id (kept by every gateway's policies), spread over the agents.
    Returns {trace_id: span_id}."""
    now = time.time_ns()
    rng = random.Random(tag)
    spans = {}
    items = []
    for tid in ids:
        span = make_span(rng, tid, rng.randbytes(8), b"", f"probe-{tag}", now, now + 1_000_000, STATUS_ERROR)
        spans[tid] = span.span_id
        items.append(("probe", span))
    for i, body in enumerate(pack_requests(items, 50)):
        agents[i % len(agents)].sender.send(body)
    return spans


def placement(gateways, spans: dict, timeout: float) -> dict:
    """{trace_id: gateway index} once every probe span arrived somewhere."""
    def all_in(view):
        return all(any(sid in g.get(tid, ()) for g in view) for tid, sid in spans.items())
    view = wait_quiet(gateways, all_in, timeout=timeout)
    out = {}
    for tid, sid in spans.items():
        at = [i for i, g in enumerate(view) if sid in g.get(tid, ())]
        assert len(at) == 1, f"probe span of {tid.hex()} at gateways {at}"
        out[tid] = at[0]
    return out


def wait_metric(agents, name: str, want: float, timeout: float = 15, **labels):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if all(a.scrape().value(name, **labels) == want for a in agents):
            return
        time.sleep(0.1)
    raise AssertionError(f"{name}{labels} != {want}: {[a.scrape().value(name, **labels) for a in agents]}")


class Load:
    """Sends 3-span ERROR traces, each over two agents, until stopped; remembers every span an
    agent acknowledged."""

    def __init__(self, agents: list[Agent]):
        self.agents, self.acked, self.stop_ = agents, {}, threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        rng = random.Random(7)
        n = 0
        while not self.stop_.is_set():
            tid = rng.randbytes(16)
            now = time.time_ns()
            spans = [make_span(rng, tid, rng.randbytes(8), b"", "load", now, now + 1_000_000, STATUS_ERROR)
                     for _ in range(3)]
            for k, span in enumerate(spans):
                agent = self.agents[(n + k) % len(self.agents)]
                agent.sender.send(pack_requests([("load", span)], 1)[0])
                self.acked.setdefault(tid, set()).add(span.span_id)
            n += 1
            time.sleep(0.005)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop_.set()
        self.thread.join(10)


def write_hosts(path: Path, ips: list[str]):
    text = "127.0.0.1 localhost\n" + "".join(f"{ip} {HOSTNAME}\n" for ip in ips)
    with open(path, "r+" if path.exists() else "w") as f:  # in place: the bind mount pins the inode
        f.seek(0)
        f.write(text)
        f.truncate()


def moved(a: dict, b: dict) -> float:
    return sum(1 for t in a if a[t] != b[t]) / len(a)


def test_membership_change_through_dns_moves_one_nth_and_loses_nothing(cluster, tmp_path):
    gateways = cluster.gateways(4)
    hosts = tmp_path / "hosts"
    write_hosts(hosts, GATEWAY_IPS[:3])
    dns = {"dns": {"hostname": HOSTNAME, "port": str(cluster.grpc_port), "interval": "200ms", "timeout": "1s"}}
    agents = [cluster.agent(dns, hosts) for _ in range(3)]
    wait_metric(agents, "otelcol_loadbalancer_num_backends", 3)
    ids = probe_traces(random.Random(1), 900)
    with Load(agents) as load:
        a = placement(gateways, send_probes(agents, ids, "a"), timeout=DECISION_WAIT + 15)
        assert set(a.values()) == {0, 1, 2}

        write_hosts(hosts, GATEWAY_IPS[:2])  # gateway 3 leaves the Service
        wait_metric(agents, "otelcol_loadbalancer_num_backends", 2)
        b = placement(gateways, send_probes(agents, ids, "b"), timeout=DECISION_WAIT + 15)
        left = moved(a, b)
        assert 0.23 < left < 0.43, left
        assert all(a[t] == 2 for t in ids if a[t] != b[t]), "only the leaving gateway's keys move"
        assert set(b.values()) == {0, 1}

        write_hosts(hosts, [GATEWAY_IPS[0], GATEWAY_IPS[1], GATEWAY_IPS[3]])  # a new gateway joins
        wait_metric(agents, "otelcol_loadbalancer_num_backends", 3)
        c = placement(gateways, send_probes(agents, ids, "c"), timeout=DECISION_WAIT + 15)
        joined = moved(b, c)
        assert 0.23 < joined < 0.43, joined
        assert all(c[t] == 3 for t in ids if b[t] != c[t]), "only keys taken by the new gateway move"
        print(f"moved on leave: {left:.3f}, on join: {joined:.3f} (ideal 1/3)")
    acked = load.acked
    assert len(acked) > 100

    def all_there(view):
        return all(sids <= set().union(*(g.get(t, set()) for g in view)) for t, sids in acked.items())
    view = wait_quiet(gateways, all_there, timeout=DECISION_WAIT + 20)
    lost = sum(len(sids - set().union(*(g.get(t, set()) for g in view))) for t, sids in acked.items())
    assert lost == 0, f"{lost} acknowledged spans lost"
    for ag in agents:
        m = ag.scrape()
        assert m.value("otelcol_exporter_send_failed_spans_total") == 0
        assert m.value("otelcol_exporter_enqueue_failed_spans_total") == 0
        assert m.value("otelcol_loadbalancer_num_resolutions", success="true") > 5


def test_a_down_gateway_share_goes_elsewhere_and_returns(cluster):
    gateways = cluster.gateways(3)
    static = {"static": {"hostnames": [g.endpoint for g in gateways]}}
    agents = [cluster.agent(static)]
    ids = probe_traces(random.Random(2), 600)
    a = placement(gateways, send_probes(agents, ids, "a"), timeout=DECISION_WAIT + 15)
    assert set(a.values()) == {0, 1, 2}

    gateways[1].stop()
    b = placement(gateways, send_probes(agents, ids, "b"), timeout=DECISION_WAIT + 30)
    assert 1 not in b.values()
    assert all(b[t] == a[t] for t in ids if a[t] != 1), "keys of live gateways stay put"
    wait_metric(agents, "sluice_loadbalancer_backend_down", 1, endpoint=gateways[1].endpoint)
    m = agents[0].scrape()
    assert m.value("sluice_loadbalancer_rerouted_spans_total") > 0
    assert m.value("otelcol_loadbalancer_backend_outcome", endpoint=gateways[1].endpoint, success="false") >= 3
    assert m.value("sluice_loadbalancer_backend_failed_spans_total", endpoint=gateways[1].endpoint) > 0

    gateways[1].start()
    wait_metric(agents, "sluice_loadbalancer_backend_down", 0, endpoint=gateways[1].endpoint)
    c = placement(gateways, send_probes(agents, ids, "c"), timeout=DECISION_WAIT + 15)
    assert c == a, f"{sum(1 for t in ids if c[t] != a[t])} keys did not return"
    m = agents[0].scrape()
    assert m.value("otelcol_exporter_send_failed_spans_total") == 0


def test_shutdown_drains_every_backend_queue(cluster):
    gateways = cluster.gateways(3)
    static = {"static": {"hostnames": [g.endpoint for g in gateways]}}
    agent = cluster.agent(static)
    ids = probe_traces(random.Random(3), 3000)
    spans = send_probes([agent], ids, "drain")
    # SIGTERM right after the last request was acknowledged: what the agent holds in its
    # batch processor and in the three backend queues must still leave.
    assert agent.proc.stop() == 0
    placed = placement(gateways, spans, timeout=DECISION_WAIT + 15)
    assert set(placed.values()) == {0, 1, 2}
    assert "Dropping data" not in agent.proc.log_text()
