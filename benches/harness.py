#!/usr/bin/env python3
"""Side-by-side benchmark: sluice vs rotel on the same OTLP/gRPC passthrough.

    loadgen (sluice loadgen) --OTLP/gRPC--> collector (batch 8192 / 200ms) --OTLP/gRPC--> counting sink

For each configuration the harness starts a fresh counting sink (a separate Python process, so its
CPU does not mix with the harness), starts the collector, lets it idle, then sends the load and
waits until the sink has counted every span. It measures the collector's own CPU from
/proc/<pid>/stat (utime+stime) over the load window, its peak RSS (VmHWM, plus VmRSS sampled every
100 ms) and its idle RSS (VmRSS after --idle seconds before the load). The loadgen's CPU (from
wait4's rusage) and the sink's CPU are reported too, to show which process limits throughput.

The sink never decodes protobuf: it takes the raw gRPC message bytes (grpcio's own decompression is
turned off), decompresses gzip/zstd itself by sniffing the magic bytes, and counts spans by walking
the wire format ExportTraceServiceRequest.resource_spans(1) -> ScopeSpans(2) -> spans(2).
grpcio (1.85) cannot receive zstd at all (its HPACK parser rejects `grpc-encoding: zstd` before any
handler runs), so for sluice-zstd the sink runs on a minimal unary gRPC server built on the
pure-Python `h2` package instead (`--sink h2` uses it for every configuration, to compare).

Usage (run with a Python that has grpcio, h2 and zstandard, e.g. /work/venv-probe/bin/python):

    python benches/harness.py --json /tmp/bench.json            # 2,000,000 spans per config
    python benches/harness.py --spans 200000 --json /tmp/q.json # quick run

Only 127.0.0.1 is used. Every wait is bounded; every process started is stopped (SIGTERM, then
SIGKILL after --stop-timeout).
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

CLK_TCK = os.sysconf("SC_CLK_TCK")
TRACE_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"
ALL_CONFIGS = ["rotel", "sluice-gzip", "sluice-none", "sluice-zstd", "sluice-tail", "sluice-lb-none",
               "sluice-lb-gzip", "sluice-spanmetrics-none"]


# ---------------------------------------------------------------------------------------------
# The counting sink (runs as `harness.py sink --port-file F --stats-file S` in its own process).
# ---------------------------------------------------------------------------------------------


def _varint(b, i):
    x = b[i]
    i += 1
    if x < 0x80:
        return x, i
    x &= 0x7F
    shift = 7
    while True:
        c = b[i]
        i += 1
        x |= (c & 0x7F) << shift
        if c < 0x80:
            return x, i
        shift += 7


def _skip(b, i, wire_type):
    if wire_type == 2:
        n, i = _varint(b, i)
        return i + n
    if wire_type == 0:
        while b[i] & 0x80:
            i += 1
        return i + 1
    if wire_type == 1:
        return i + 8
    if wire_type == 5:
        return i + 4
    raise ValueError(f"unsupported wire type {wire_type}")


def count_spans(b):
    """Spans in an encoded ExportTraceServiceRequest, walking only the framing."""
    n = 0
    i = 0
    end = len(b)
    while i < end:
        tag, i = _varint(b, i)
        if tag != 0x0A:  # not resource_spans (field 1, LEN)
            i = _skip(b, i, tag & 7)
            continue
        ln, i = _varint(b, i)
        r_end = i + ln
        while i < r_end:
            tag, i = _varint(b, i)
            if tag != 0x12:  # not scope_spans (field 2, LEN)
                i = _skip(b, i, tag & 7)
                continue
            ln, i = _varint(b, i)
            s_end = i + ln
            while i < s_end:
                tag, i = _varint(b, i)
                if tag == 0x12:  # spans (field 2, LEN)
                    n += 1
                i = _skip(b, i, tag & 7)
            if i != s_end:
                raise ValueError("ScopeSpans overran its length")
        if i != r_end:
            raise ValueError("ResourceSpans overran its length")
    if i != end:
        raise ValueError("request overran its length")
    return n


class SinkStats:
    """Counters shared by both sink engines, written to --stats-file every 100 ms."""

    def __init__(self, engine):
        import zlib

        try:
            import zstandard
        except ImportError:  # zstd messages are then counted as undecodable and refused
            zstandard = None
        self._zlib, self._zstd = zlib, zstandard
        self.lock = threading.Lock()
        self.in_flight = 0
        self.s = {
            "pid": os.getpid(),
            "engine": engine,
            "requests": 0,
            "spans": 0,
            "wire_bytes": 0,
            "raw_bytes": 0,
            "max_request_spans": 0,
            "encodings": {},
            "other_methods": {},
            "errors": [],
            "first_request_mono": None,
            "last_request_mono": None,
            "handler_cpu_s": 0.0,
            "max_in_flight": 0,
        }

    def decode(self, msg, encoding=None):
        """(encoding, raw bytes) of one gRPC message: sniffed by magic bytes, or as told."""
        head = msg[:4]
        if encoding == "gzip" or (encoding is None and head[:2] == b"\x1f\x8b"):
            return "gzip", self._zlib.decompress(msg, 31)
        if encoding == "zstd" or (encoding is None and head == b"\x28\xb5\x2f\xfd"):
            if self._zstd is None:
                raise ValueError("zstd message but the zstandard package is not installed")
            return "zstd", self._zstd.ZstdDecompressor().decompressobj().decompress(msg)
        if encoding == "deflate":
            return "deflate", self._zlib.decompress(msg)
        if encoding not in (None, "identity"):
            raise ValueError(f"unsupported grpc-encoding {encoding!r}")
        return "none", msg

    def export(self, msg, encoding=None):
        """Counts one Export request. Raises ValueError if it cannot be read."""
        t0 = time.thread_time()
        with self.lock:
            self.in_flight += 1
            self.s["max_in_flight"] = max(self.s["max_in_flight"], self.in_flight)
        try:
            enc, data = self.decode(msg, encoding)
            n = count_spans(data)
        except Exception as e:
            with self.lock:
                self.in_flight -= 1
                if len(self.s["errors"]) < 20:
                    self.s["errors"].append(f"{type(e).__name__}: {e}")
                enc_counts = self.s["encodings"]
                enc_counts["undecodable"] = enc_counts.get("undecodable", 0) + 1
            raise ValueError(str(e)) from e
        now = time.monotonic()
        with self.lock:
            s = self.s
            self.in_flight -= 1
            s["requests"] += 1
            s["spans"] += n
            s["wire_bytes"] += len(msg)
            s["raw_bytes"] += len(data)
            s["max_request_spans"] = max(s["max_request_spans"], n)
            s["encodings"][enc] = s["encodings"].get(enc, 0) + 1
            if s["first_request_mono"] is None:
                s["first_request_mono"] = now
            s["last_request_mono"] = now
            s["handler_cpu_s"] += time.thread_time() - t0
        return n

    def other(self, method):
        with self.lock:
            self.s["other_methods"][method] = self.s["other_methods"].get(method, 0) + 1

    def write(self, path):
        with self.lock:
            snap = json.dumps(self.s)
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(snap)
        os.replace(tmp, path)


def _announce(port, args):
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)


def run_sink_grpcio(args):
    """grpcio server with a generic handler on raw bytes; grpcio's decompression is off and
    the sink decompresses by magic bytes. grpcio (1.85) cannot receive `grpc-encoding: zstd`:
    its HPACK parser rejects the header before any handler runs."""
    import grpc
    from concurrent import futures

    stats = SinkStats("grpcio")

    def export(request, context):
        try:
            stats.export(request)
        except ValueError as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"sink cannot read message: {e}")
        return b""  # an empty ExportTraceServiceResponse

    def other(method):
        def handler(request, context):
            stats.other(method)
            return b""

        return handler

    class Handler(grpc.GenericRpcHandler):
        def service(self, details):
            fn = export if details.method == TRACE_EXPORT else other(details.method)
            return grpc.unary_unary_rpc_method_handler(fn)  # raw bytes in and out

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=16),
        handlers=[Handler()],
        options=[
            ("grpc.max_receive_message_length", 256 * 1024 * 1024),
            ("grpc.per_message_decompression", 0),  # hand us the compressed bytes
        ],
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    stats.write(args.stats_file)
    _announce(port, args)
    while not stop.wait(0.1):
        stats.write(args.stats_file)
    server.stop(grace=2).wait(5)
    stats.write(args.stats_file)
    return 0


def run_sink_h2(args):
    """A minimal unary gRPC server on the pure-Python `h2` package (asyncio), for what grpcio
    cannot take (zstd). It reads the gRPC message prefix itself and honours grpc-encoding."""
    import asyncio

    import h2.config
    import h2.connection
    import h2.events
    import h2.exceptions
    import h2.settings

    stats = SinkStats("h2")
    ok_body = b"\x00\x00\x00\x00\x00"  # one empty, uncompressed message

    def respond(conn, sid, status, message=""):
        conn.send_headers(sid, [(":status", "200"), ("content-type", "application/grpc")])
        trailers = [("grpc-status", str(status))]
        if status == 0:
            conn.send_data(sid, ok_body)
        else:
            trailers.append(("grpc-message", message.encode("ascii", "replace").decode()[:200]))
        conn.send_headers(sid, trailers, end_stream=True)

    def finish(conn, sid, headers, body):
        path = headers.get(b":path", b"").decode()
        if path != TRACE_EXPORT:
            stats.other(path)
            respond(conn, sid, 0)
            return
        if len(body) < 5:
            respond(conn, sid, 13, "short gRPC message")
            return
        compressed = body[0] == 1
        length = int.from_bytes(body[1:5], "big")
        msg = bytes(body[5 : 5 + length])
        enc = headers.get(b"grpc-encoding", b"identity").decode() if compressed else "identity"
        try:
            stats.export(msg, enc)
        except ValueError as e:
            respond(conn, sid, 12 if "grpc-encoding" in str(e) else 3, f"sink: {e}")
            return
        respond(conn, sid, 0)

    window = 32 * 1024 * 1024

    async def handle(reader, writer):
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None))
        # Our settings go out in the first SETTINGS frame and hold from the start. (Changing
        # them later with update_settings races: h2 checks the frame size of a whole read
        # against the old limit even when the ACK is earlier in that read.)
        conn.local_settings = h2.settings.Settings(client=False, initial_values={
            h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: 256,
            h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window,
            h2.settings.SettingCodes.MAX_FRAME_SIZE: 1 << 20,
        })
        conn.max_inbound_frame_size = 1 << 20
        conn.initiate_connection()
        conn.increment_flow_control_window(window)
        writer.write(conn.data_to_send())
        streams = {}
        try:
            while True:
                data = await reader.read(1 << 20)
                if not data:
                    break
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.RequestReceived):
                        streams[ev.stream_id] = (dict(ev.headers), bytearray())
                        with stats.lock:  # requests open at once on this connection
                            stats.s["max_open_streams"] = max(
                                stats.s.get("max_open_streams", 0), len(streams))
                    elif isinstance(ev, h2.events.DataReceived):
                        if ev.stream_id in streams:
                            streams[ev.stream_id][1].extend(ev.data)
                        conn.acknowledge_received_data(ev.flow_controlled_length, ev.stream_id)
                    elif isinstance(ev, h2.events.StreamEnded):
                        st = streams.pop(ev.stream_id, None)
                        if st:
                            finish(conn, ev.stream_id, st[0], st[1])
                    elif isinstance(ev, h2.events.StreamReset):
                        streams.pop(ev.stream_id, None)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        break
                out = conn.data_to_send()
                if out:
                    writer.write(out)
                    await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError) as e:
            with stats.lock:
                if len(stats.s["errors"]) < 20:
                    stats.s["errors"].append(f"connection: {type(e).__name__}: {e}")
        finally:
            writer.close()

    async def main():
        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        loop.add_signal_handler(signal.SIGINT, stop.set)
        stats.write(args.stats_file)
        _announce(port, args)
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
            stats.write(args.stats_file)
        server.close()
        stats.write(args.stats_file)

    asyncio.run(main())
    return 0


# ---------------------------------------------------------------------------------------------
# The harness.
# ---------------------------------------------------------------------------------------------


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_seconds(pid):
    """utime+stime of a live process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    rest = s[s.rindex(")") + 2 :].split()
    return (int(rest[11]) + int(rest[12])) / CLK_TCK


def minor_faults(pid):
    """Minor page faults of a live process so far (memory the kernel mapped in and cleared)."""
    with open(f"/proc/{pid}/stat") as f:
        s = f.read()
    return int(s[s.rindex(")") + 2 :].split()[7])


def status_kib(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


def thread_count(pid):
    try:
        return len(os.listdir(f"/proc/{pid}/task"))
    except OSError:
        return None


def machine_info():
    model = None
    with open("/proc/cpuinfo") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k.strip() in ("model name", "Hardware", "cpu model") and v.strip():
                model = v.strip()
                break
    with open("/proc/loadavg") as f:
        loadavg = f.read().split()[:3]
    try:
        with open("/proc/meminfo") as f:
            mem_kib = int(f.readline().split()[1])
    except (OSError, ValueError, IndexError):
        mem_kib = None
    return {
        "nproc": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "kernel": os.uname().release,
        "machine": os.uname().machine,
        "mem_total_mib": round(mem_kib / 1024) if mem_kib else None,
        "loadavg_at_start": loadavg,
    }


def version_of(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
        return (out.stdout.strip() or out.stderr.strip()).splitlines()[0]
    except (OSError, subprocess.SubprocessError, IndexError) as e:
        return f"unknown ({e})"


def find_rotel():
    hits = glob.glob("/work/venv-probe/lib/python*/site-packages/rotel/rotel-agent")
    if hits:
        return hits[0]
    try:
        import rotel  # noqa: F401

        cand = os.path.join(os.path.dirname(rotel.__file__), "rotel-agent")
        if os.path.exists(cand):
            return cand
    except ImportError:
        pass
    return None


class Procs:
    """Every process the harness starts, so that all of them are stopped at the end."""

    def __init__(self, stop_timeout):
        self.stop_timeout = stop_timeout
        self.live = []

    def start(self, name, cmd, log_path, env=None):
        log = open(log_path, "wb")
        p = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # a Ctrl-C on the harness doesn't hit them directly
        )
        log.close()
        p.bench_name = name
        self.live.append(p)
        return p

    def stop(self, p):
        """SIGTERM, wait up to stop_timeout, then SIGKILL. Returns (exit code, seconds, killed)."""
        if p not in self.live:
            return p.returncode, 0.0, False
        t0 = time.monotonic()
        killed = False
        if p.poll() is None:
            try:
                p.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                p.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                killed = True
                p.kill()
                try:
                    p.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    pass
        self.live.remove(p)
        return p.returncode, time.monotonic() - t0, killed

    def stop_all(self):
        for p in list(reversed(self.live)):
            self.stop(p)


def wait_for_file(path, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if os.path.exists(path):
            return True
        if proc.poll() is not None:
            return False
        time.sleep(0.05)
    return False


def wait_for_port(port, proc, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def read_stats(path):
    for _ in range(20):
        try:
            with open(path) as f:
                return json.load(f)
        except (OSError, ValueError):
            time.sleep(0.02)
    return None


class RssSampler(threading.Thread):
    def __init__(self, pid, interval=0.1):
        super().__init__(daemon=True)
        self.pid = pid
        self.interval = interval
        self.max_kib = 0
        self.samples = 0
        self.max_threads = 0
        self._halt = threading.Event()

    def run(self):
        while not self._halt.is_set():
            try:
                rss = status_kib(self.pid, "VmRSS") or 0
            except OSError:
                return
            self.max_kib = max(self.max_kib, rss)
            self.max_threads = max(self.max_threads, thread_count(self.pid) or 0)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self):
        self._halt.set()
        self.join(timeout=2)


def wait_rusage(pid, timeout):
    """wait4 with a deadline. Returns (exit status, rusage) or (None, None) on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        wpid, status, ru = os.wait4(pid, os.WNOHANG)
        if wpid == pid:
            return os.waitstatus_to_exitcode(status), ru
        if time.monotonic() >= deadline:
            return None, None
        time.sleep(0.02)


def log_findings(path, limit=20):
    """Error/warning/panic lines of a collector log (ANSI colour stripped)."""
    ansi = re.compile(r"\x1b\[[0-9;]*m")
    pat = re.compile(r"\b(ERROR|WARN|WARNING|error|panic|panicked)\b")
    hits, total = [], 0
    try:
        with open(path, errors="replace") as f:
            for line in f:
                line = ansi.sub("", line.rstrip("\n"))
                if pat.search(line):
                    total += 1
                    if len(hits) < limit:
                        hits.append(line[:400])
    except OSError:
        pass
    return total, hits


# Issue 3's tail-sampling load: keep errors, slow traces and 10% of the rest, decided 2 s
# after a trace's first span.
TAIL_SAMPLING = """\
  tail_sampling:
    decision_wait: 2s
    policies:
      - {name: errors, type: status_code, status_code: {status_codes: [ERROR]}}
      - {name: slow, type: latency, latency: {threshold_ms: 1000}}
      - {name: rest, type: probabilistic, probabilistic: {sampling_percentage: 10}}
"""


# The `loadbalancing` exporter's three backends for sluice-lb-*: three ring members, each with
# its own gRPC connection, queue and workers, all served by the one counting sink through three
# spellings of 127.0.0.1 (getaddrinfo reads `127.1` and `127.0.1` as 127.0.0.1), so the sink's
# count stays the single measure of delivery.
LB_HOSTS = ["127.0.0.1", "127.1", "127.0.1"]


def lb_exporter(sink_port, compression):
    hostnames = ", ".join(f"{h}:{sink_port}" for h in LB_HOSTS)
    return f"""\
  loadbalancing:
    routing_key: traceID
    sending_queue:
      queue_size: 4
      block_on_overflow: true
    protocol:
      otlp:
        tls:
          insecure: true
        compression: {compression}
        sending_queue:
          queue_size: 4
          num_consumers: 2
          block_on_overflow: true
    resolver:
      static:
        hostnames: [{hostnames}]
"""


# Issue 7's span metrics: a second traces pipeline from the same receiver feeds the
# `spanmetrics` connector with five dimensions (all present on loadgen spans); its metrics go
# to `debug` at basic verbosity, one log line per flush.
SPANMETRICS_CONNECTOR = """\
connectors:
  spanmetrics:
    dimensions:
      - name: http.request.method
      - name: http.route
      - name: http.response.status_code
      - name: server.address
      - name: cache.hit
    metrics_flush_interval: 5s
"""

SPANMETRICS_PIPELINES = """\
    traces/spanmetrics:
      receivers: [otlp]
      exporters: [spanmetrics]
    metrics/spanmetrics:
      receivers: [spanmetrics]
      exporters: [debug]
"""


def sluice_config(path, grpc_port, sink_port, metrics_port, compression, tail=False, lb=False,
                  spanmetrics=False):
    exporter = lb_exporter(sink_port, compression) if lb else f"""\
  otlp:
    endpoint: 127.0.0.1:{sink_port}
    tls:
      insecure: true
    compression: {compression}
    # Push back to the client when the backend (here: compression) is slower than the load,
    # as rotel does, instead of holding the collector-default 1,000 batches in memory.
    sending_queue:
      queue_size: 4
      num_consumers: 2
      block_on_overflow: true
"""
    if spanmetrics:
        exporter += "  debug:\n    verbosity: basic\n"
    text = f"""\
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{grpc_port}
{SPANMETRICS_CONNECTOR if spanmetrics else ""}processors:
{TAIL_SAMPLING if tail else ""}  batch:
    send_batch_size: 8192
    timeout: 200ms
exporters:
{exporter}service:
  pipelines:
    traces:
      receivers: [otlp]
      processors: [{"tail_sampling, " if tail else ""}batch]
      exporters: [{"loadbalancing" if lb else "otlp"}]
{SPANMETRICS_PIPELINES if spanmetrics else ""}  telemetry:
    metrics:
      address: 127.0.0.1:{metrics_port}
    logs:
      level: warn
"""
    with open(path, "w") as f:
        f.write(text)


def exported_spans(port):
    """What sluice's exporters report as sent, in spans."""
    total = 0
    for line in scrape_span_metrics(port):
        if line.startswith("otelcol_exporter_sent_spans_total"):
            total += int(float(line.rsplit(" ", 1)[1]))
    return total


def scrape_span_metrics(port):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=3) as r:
            body = r.read().decode(errors="replace")
    except OSError as e:
        return [f"scrape failed: {e}"]
    return [
        line
        for line in body.splitlines()
        if "spans" in line and not line.startswith("#")
    ]


def run_config(name, a, procs, workdir):
    res = {"config": name, "spans_requested": a.spans, "ok": False, "notes": []}
    cdir = os.path.join(workdir, name)
    os.makedirs(cdir, exist_ok=True)
    print(f"\n=== {name} ===", flush=True)

    # 1. A fresh sink.
    port_file = os.path.join(cdir, "sink.port")
    stats_file = os.path.join(cdir, "sink.stats.json")
    for stale in (port_file, stats_file):  # a reused --workdir must not feed us an old port
        if os.path.exists(stale):
            os.remove(stale)
    engine = a.sink if a.sink != "auto" else ("h2" if name == "sluice-zstd" else "grpcio")
    res["sink_engine"] = engine
    sink = procs.start(
        "sink",
        [sys.executable, os.path.abspath(__file__), "sink", "--engine", engine,
         "--port-file", port_file, "--stats-file", stats_file],
        os.path.join(cdir, "sink.log"),
    )
    if not wait_for_file(port_file, sink, 20):
        res["notes"].append("sink did not start; see " + os.path.join(cdir, "sink.log"))
        procs.stop(sink)
        return res
    with open(port_file) as f:
        sink_port = int(f.read())

    # 2. The collector.
    grpc_port = free_port()
    env = dict(os.environ, NO_COLOR="1")
    if name == "rotel":
        http_port = free_port()
        cmd = [
            a.rotel, "start",
            "--otlp-grpc-endpoint", f"127.0.0.1:{grpc_port}",
            "--otlp-http-endpoint", f"127.0.0.1:{http_port}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", f"http://127.0.0.1:{sink_port}",
            "--otlp-exporter-protocol", "grpc",
            "--pid-file", os.path.join(cdir, "rotel.pid"),
            "--log-file", os.path.join(cdir, "rotel-daemon.log"),
        ]
        metrics_port = None
    else:
        tail = name == "sluice-tail"
        lb = name.startswith("sluice-lb-")
        spanmetrics = name.startswith("sluice-spanmetrics-")
        compression = "gzip" if tail else name.rsplit("-", 1)[1]
        metrics_port = free_port()
        cfg = os.path.join(cdir, "sluice.yaml")
        sluice_config(cfg, grpc_port, sink_port, metrics_port, compression, tail, lb, spanmetrics)
        v = subprocess.run([a.sluice, "validate", "--config", cfg], capture_output=True,
                           text=True, timeout=20)
        if v.returncode != 0:
            res["notes"].append(f"sluice validate failed: {v.stderr.strip() or v.stdout.strip()}")
            procs.stop(sink)
            return res
        cmd = [a.sluice, "--config", cfg]
    res["command"] = " ".join(cmd)
    log_path = os.path.join(cdir, "collector.log")
    res["log"] = log_path
    col = procs.start(name, cmd, log_path, env=env)
    if not wait_for_port(grpc_port, col, 20):
        res["notes"].append(f"collector did not listen on 127.0.0.1:{grpc_port}; see {log_path}")
        res["exit_code"], _, _ = procs.stop(col)
        procs.stop(sink)
        res["log_findings"] = log_findings(log_path)
        return res
    sampler = RssSampler(col.pid)
    sampler.start()

    # 3. Idle.
    cpu_idle0 = cpu_seconds(col.pid)
    time.sleep(a.idle)
    res["idle_rss_mib"] = round(status_kib(col.pid, "VmRSS") / 1024, 1)
    res["idle_cpu_s"] = round(cpu_seconds(col.pid) - cpu_idle0, 3)
    res["threads_idle"] = thread_count(col.pid)

    # 4. Load.
    with open("/proc/loadavg") as f:
        res["loadavg_1m_before_load"] = float(f.read().split()[0])
    if res["loadavg_1m_before_load"] > 0.5 * len(os.sched_getaffinity(0)):
        res["notes"].append(
            f"machine busy before the load (1-min loadavg {res['loadavg_1m_before_load']}): "
            "wall times are unreliable, CPU-seconds less so")
    sink_cpu0 = cpu_seconds(sink.pid)
    cpu0 = cpu_seconds(col.pid)
    faults0 = minor_faults(col.pid)
    lg_cmd = [
        a.sluice, "loadgen", "--signal", "traces", "--protocol", "grpc",
        "--endpoint", f"127.0.0.1:{grpc_port}", "--rate", str(a.rate), "--count", str(a.spans),
        "--batch", str(a.batch), "--attributes", "10", "--workers", str(a.workers),
        "--error-ratio", str(a.error_ratio), "--slow-ratio", str(a.slow_ratio),
    ] + (["--distinct", str(a.distinct)] if a.distinct else [])
    res["loadgen_command"] = " ".join(lg_cmd)
    lg_log = os.path.join(cdir, "loadgen.log")
    t_start = time.monotonic()
    lg = procs.start("loadgen", lg_cmd, lg_log)
    code, ru = wait_rusage(lg.pid, a.load_timeout)
    t_load_end = time.monotonic()
    if code is None:
        res["notes"].append(f"loadgen did not finish within {a.load_timeout}s; killed")
        procs.stop(lg)
    else:
        lg.returncode = code
        procs.live.remove(lg)
        res["loadgen_cpu_s"] = round(ru.ru_utime + ru.ru_stime, 3)
        res["loadgen_peak_rss_mib"] = round(ru.ru_maxrss / 1024, 1)
    res["loadgen_exit_code"] = code
    res["loadgen_s"] = round(t_load_end - t_start, 3)
    with open(lg_log, errors="replace") as f:
        lg_out = f.read()
    res["loadgen_output"] = lg_out.strip()
    m = re.search(r"accepted (\d+) \w+ in (\d+) requests; (\d+) requests failed", lg_out)
    sent = int(m.group(1)) if m else 0
    if m and int(m.group(3)):
        res["notes"].append(f"loadgen: {m.group(3)} requests failed: {lg_out.strip()}")
    m2 = re.search(r"sent (\d+) ", lg_out)
    res["spans_attempted"] = int(m2.group(1)) if m2 else None
    res["spans_sent"] = sent

    # 5. Drain: wait until the sink has every accepted span, or nothing arrives for a while.
    # With tail sampling only the kept spans leave: wait out the decisions, then expect what
    # sluice says it sent.
    expected = sent
    if name == "sluice-tail":
        time.sleep(3.5)
        expected = exported_spans(metrics_port)
        res["spans_kept_by_sampling"] = expected
    last_spans, last_change = -1, time.monotonic()
    stats = None
    while True:
        stats = read_stats(stats_file) or {}
        got = stats.get("spans", 0)
        if got != last_spans:
            last_spans, last_change = got, time.monotonic()
        if got >= expected and expected > 0:
            break
        if time.monotonic() - last_change > a.drain_timeout:
            res["notes"].append(
                f"sink stopped receiving at {got} of {sent} spans ({a.drain_timeout}s without progress)")
            break
        if col.poll() is not None:
            res["notes"].append(f"collector exited with {col.returncode} during the run")
            break
        time.sleep(0.05)
    t_drained = time.monotonic()
    try:
        cpu1 = cpu_seconds(col.pid)
        res["minor_faults"] = minor_faults(col.pid) - faults0
        res["peak_rss_mib"] = round(status_kib(col.pid, "VmHWM") / 1024, 1)
        res["rss_after_mib"] = round(status_kib(col.pid, "VmRSS") / 1024, 1)
        res["sink_cpu_s"] = round(cpu_seconds(sink.pid) - sink_cpu0, 3)
    except OSError:
        cpu1 = None
    sampler.stop()
    res["max_sampled_rss_mib"] = round(sampler.max_kib / 1024, 1)
    res["rss_samples"] = sampler.samples
    res["max_threads"] = sampler.max_threads
    last = stats.get("last_request_mono") or t_drained
    res["wall_s"] = round(max(last, t_load_end) - t_start, 3)
    if metrics_port:
        res["sluice_span_metrics"] = scrape_span_metrics(metrics_port)

    # 6. Stop the collector, then see whether anything more arrived.
    res["exit_code"], stop_s, killed = procs.stop(col)
    res["shutdown_s"] = round(stop_s, 3)
    if killed:
        res["notes"].append(f"collector ignored SIGTERM for {a.stop_timeout}s; SIGKILLed")
    time.sleep(0.3)
    procs.stop(sink)
    final = read_stats(stats_file) or stats
    res["spans_received"] = stats.get("spans", 0)
    res["spans_received_after_stop"] = final.get("spans", 0)
    res["sink"] = {k: final.get(k) for k in (
        "requests", "wire_bytes", "raw_bytes", "max_request_spans", "encodings", "errors",
        "other_methods", "handler_cpu_s", "max_in_flight", "max_open_streams")}
    if cpu1 is not None:
        cpu = cpu1 - cpu0
        res["cpu_s"] = round(cpu, 3)
        res["cpu_s_per_mspans"] = round(cpu / (sent / 1e6), 3) if sent else None
        res["collector_util"] = round(cpu / res["wall_s"], 3) if res["wall_s"] else None
        if res.get("sink_cpu_s") is not None:
            res["sink_util"] = round(res["sink_cpu_s"] / res["wall_s"], 3)
        if res.get("loadgen_cpu_s") is not None:
            res["loadgen_util"] = round(res["loadgen_cpu_s"] / res["loadgen_s"], 3)
    res["spans_per_s"] = round(sent / res["wall_s"]) if res.get("wall_s") else None
    res["lost"] = expected - res["spans_received_after_stop"]
    if res["lost"]:
        res["notes"].append(f"LOSS: sent {sent}, sink received {res['spans_received_after_stop']}")
    if res["spans_received"] != res["spans_received_after_stop"]:
        res["notes"].append(
            f"{res['spans_received_after_stop'] - res['spans_received']} spans arrived only at shutdown")
    if final.get("errors"):
        res["notes"].append("sink refused messages: " + "; ".join(final["errors"][:3]))
    if res["exit_code"] not in (0, None):
        res["notes"].append(f"collector exit code {res['exit_code']}")
    res["log_findings"] = log_findings(log_path)
    res["ok"] = (code == 0 and res["lost"] == 0 and sent == a.spans
                 and not final.get("errors"))
    summary = (f"sent {sent}, received {res['spans_received_after_stop']}, wall {res['wall_s']}s, "
               f"CPU {res.get('cpu_s')}s ({res.get('cpu_s_per_mspans')} s/M spans), "
               f"peak RSS {res.get('peak_rss_mib')} MiB, idle RSS {res['idle_rss_mib']} MiB; "
               f"loadgen CPU {res.get('loadgen_cpu_s')}s, sink CPU {res.get('sink_cpu_s')}s")
    print(summary, flush=True)
    for n in res["notes"]:
        print("  note:", n, flush=True)
    if res["log_findings"][0]:
        print(f"  {res['log_findings'][0]} error/warning lines in {log_path}, e.g.:", flush=True)
        for line in res["log_findings"][1][:5]:
            print("    " + line, flush=True)
    return res


def fmt(v, digits=2):
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def ratios(results):
    base = next((r for r in results if r["config"] == "rotel" and r.get("cpu_s_per_mspans")), None)
    out = {}
    for r in results:
        if not base or r["config"] == "rotel" or not r.get("cpu_s_per_mspans"):
            continue
        out[r["config"]] = {
            "cpu_per_span_vs_rotel": round(r["cpu_s_per_mspans"] / base["cpu_s_per_mspans"], 3),
            "peak_rss_vs_rotel": round(r["peak_rss_mib"] / base["peak_rss_mib"], 3),
            "idle_rss_vs_rotel": round(r["idle_rss_mib"] / base["idle_rss_mib"], 3),
        }
    return out


def markdown(report):
    res, rat = report["results"], report["ratios"]
    lines = [
        "| config | spans sent | spans received | wall s | spans/s | collector CPU s | "
        "CPU s / M spans | peak RSS MiB (VmHWM) | idle RSS MiB | CPU/span ÷ rotel | "
        "peak RSS ÷ rotel |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in res:
        rr = rat.get(r["config"], {})
        recv = fmt(r.get("spans_received_after_stop"))
        if r.get("lost"):
            recv += f" (**lost {r['lost']:,}**)"
        lines.append(
            f"| {r['config']} | {fmt(r.get('spans_sent'))} | {recv} | {fmt(r.get('wall_s'))} | "
            f"{fmt(r.get('spans_per_s'))} | {fmt(r.get('cpu_s'))} | "
            f"{fmt(r.get('cpu_s_per_mspans'))} | {fmt(r.get('peak_rss_mib'), 1)} | "
            f"{fmt(r.get('idle_rss_mib'), 1)} | "
            f"{fmt(rr.get('cpu_per_span_vs_rotel')) if rr else ('1.00' if r['config'] == 'rotel' else '—')} | "
            f"{fmt(rr.get('peak_rss_vs_rotel')) if rr else ('1.00' if r['config'] == 'rotel' else '—')} |"
        )
    lines += [
        "",
        "| config | loadgen s | loadgen CPU s (util) | sink CPU s (util) | collector util | "
        "sink wire MiB | encoding at sink | sink requests | sink | max sampled RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---|---:|---|---:|",
    ]
    for r in res:
        s = r.get("sink") or {}
        enc = ", ".join(f"{k} {v}" for k, v in sorted((s.get("encodings") or {}).items()))
        wire = s.get("wire_bytes")
        lines.append(
            f"| {r['config']} | {fmt(r.get('loadgen_s'))} | "
            f"{fmt(r.get('loadgen_cpu_s'))} ({fmt(r.get('loadgen_util'))}) | "
            f"{fmt(r.get('sink_cpu_s'))} ({fmt(r.get('sink_util'))}) | "
            f"{fmt(r.get('collector_util'))} | {fmt(wire / 2**20 if wire else None, 1)} | "
            f"{enc or '—'} | {fmt(s.get('requests'))} | {r.get('sink_engine', '—')} | "
            f"{fmt(r.get('max_sampled_rss_mib'), 1)} |"
        )
    return "\n".join(lines)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "sink":
        p = argparse.ArgumentParser(prog="harness.py sink")
        p.add_argument("--port-file", required=True)
        p.add_argument("--stats-file", required=True)
        p.add_argument("--engine", choices=["grpcio", "h2"], default="grpcio")
        sa = p.parse_args(sys.argv[2:])
        return run_sink_h2(sa) if sa.engine == "h2" else run_sink_grpcio(sa)

    here = os.path.dirname(os.path.abspath(__file__))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--spans", type=int, default=2_000_000, help="spans per configuration")
    p.add_argument("--batch", type=int, default=512, help="spans per loadgen request")
    p.add_argument("--workers", type=int, default=4, help="loadgen workers (one request in flight each)")
    p.add_argument("--distinct", type=int, default=0,
                   help="requests each loadgen worker generates up front and cycles through "
                        "(0 = a new request each time, costing the generator ~1 core)")
    p.add_argument("--rate", type=float, default=0, help="loadgen spans/s over all workers; 0 = as fast as possible")
    p.add_argument("--error-ratio", type=float, default=0.0, help="fraction of traces with an error span")
    p.add_argument("--slow-ratio", type=float, default=0.0, help="fraction of traces lasting 2 s")
    p.add_argument("--configs", default=",".join(ALL_CONFIGS[:4]),
                   help=f"comma-separated, in order, from {','.join(ALL_CONFIGS)} "
                        f"(default {','.join(ALL_CONFIGS[:4])})")
    p.add_argument("--sluice", default=os.path.join(here, "..", "target", "release", "sluice"))
    p.add_argument("--rotel", default=find_rotel())
    p.add_argument("--idle", type=float, default=3.0, help="seconds of idle before the load")
    p.add_argument("--load-timeout", type=float, default=900.0)
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="give up when the sink sees no new span for this long")
    p.add_argument("--stop-timeout", type=float, default=10.0, help="SIGTERM → SIGKILL delay")
    p.add_argument("--pause", type=float, default=2.0, help="seconds between configurations")
    p.add_argument("--sink", choices=["auto", "grpcio", "h2"], default="auto",
                   help="sink engine: grpcio (generic raw-bytes handler) or h2 (pure-Python "
                        "HTTP/2, the only one that takes zstd); auto = h2 for sluice-zstd only")
    p.add_argument("--workdir", help="where configs and logs go (default: a new temp dir)")
    p.add_argument("--json", help="write the full report here")
    a = p.parse_args()
    a.sluice = os.path.abspath(a.sluice)
    configs = [c.strip() for c in a.configs.split(",") if c.strip()]
    for c in configs:
        if c not in ALL_CONFIGS:
            p.error(f"unknown config {c!r}; choose from {ALL_CONFIGS}")
    if not os.access(a.sluice, os.X_OK):
        p.error(f"no sluice binary at {a.sluice}")
    if "rotel" in configs and not (a.rotel and os.access(a.rotel, os.X_OK)):
        p.error("no rotel-agent found; pass --rotel")
    workdir = a.workdir or tempfile.mkdtemp(prefix="sluice-bench-")
    os.makedirs(workdir, exist_ok=True)

    report = {
        "machine": machine_info(),
        "versions": {
            "sluice": version_of([a.sluice, "--version"]),
            "rotel": version_of([a.rotel, "--version"]) if a.rotel else None,
            "python": sys.version.split()[0],
        },
        "params": {
            "spans": a.spans, "batch": a.batch, "workers": a.workers, "distinct": a.distinct, "attributes": 10,
            "rate": a.rate, "error_ratio": a.error_ratio, "slow_ratio": a.slow_ratio,
            "collector_batch": "8192 spans / 200ms", "idle_s": a.idle, "configs": configs,
            "sink": a.sink,
            "sluice": a.sluice, "rotel": a.rotel, "workdir": workdir,
        },
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "results": [],
    }
    m = report["machine"]
    print(f"machine: {m['nproc']} CPUs, {m['cpu_model']}, kernel {m['kernel']}, "
          f"{m['mem_total_mib']} MiB, loadavg {' '.join(m['loadavg_at_start'])}")
    print(f"versions: {report['versions']['sluice']}; {report['versions']['rotel']}")
    print(f"load: {a.spans:,} spans, {a.batch}/request, 10 attributes, {a.workers} workers; "
          f"workdir {workdir}", flush=True)

    procs = Procs(a.stop_timeout)

    def on_term(*_):
        raise SystemExit(143)

    signal.signal(signal.SIGTERM, on_term)
    try:
        for i, c in enumerate(configs):
            if i:
                time.sleep(a.pause)
            report["results"].append(run_config(c, a, procs, workdir))
    except KeyboardInterrupt:
        print("interrupted; stopping processes", file=sys.stderr)
    finally:
        procs.stop_all()

    report["ratios"] = ratios(report["results"])
    report["markdown"] = markdown(report)
    print()
    print(f"Machine: {m['nproc']} × {m['cpu_model']}, Linux {m['kernel']}. "
          f"{report['versions']['sluice']}, {report['versions']['rotel']}. "
          f"{a.spans:,} spans of 10 attributes, {a.batch} per request, {a.workers} loadgen workers.")
    print()
    print(report["markdown"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(report, f, indent=2)
        print(f"\nJSON written to {a.json}")
    bad = [r["config"] for r in report["results"] if not r["ok"]]
    if bad:
        print(f"\nNOT CLEAN: {', '.join(bad)} (see notes above and the logs in {workdir})")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
