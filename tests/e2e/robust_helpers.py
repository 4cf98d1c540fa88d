"""Helpers for the robustness tests (test_robustness.py).

- `rss_kib(pid)` / `RssSampler`: resident memory of a process, sampled in a thread.
- `Metrics` / `scrape`: sluice's Prometheus self-metrics.
- `trace_request(...)`: an ExportTraceServiceRequest with known, unique span ids.
- `gzip_bomb(...)`: a gzip stream of many zeros, built without holding them in memory.
- `GrpcBodySwapProxy`: a loopback HTTP/2 relay that replaces the DATA of every gRPC request
  with given bytes, so a real gRPC client (grpcio, which sets `grpc-encoding` and decodes the
  response) can deliver an already-compressed message such as a gzip bomb.
- `TcpRelay`: a plain TCP forwarder, started late to simulate a backend that is not
  listening yet.
- `Loadgen`: `sluice loadgen` as a subprocess, with its report parsed.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import struct
import subprocess
import threading
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import requests
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

HOST = "127.0.0.1"
MIB = 1024 * 1024


# ---- memory ------------------------------------------------------------------------------

def rss_kib(pid: int) -> int | None:
    """VmRSS of `pid` in KiB, or None once the process is gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


class RssSampler:
    """Samples a process's RSS every `interval` seconds in a thread; `max_mib`, `samples`."""

    def __init__(self, pid: int, interval: float = 0.02):
        self.pid, self.interval = pid, interval
        self.samples: list[tuple[float, int]] = []  # (monotonic time, KiB)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            kib = rss_kib(self.pid)
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            self._stop.wait(self.interval)

    @property
    def max_mib(self) -> float:
        return max((k for _, k in self.samples), default=0) / 1024

    @property
    def last_mib(self) -> float:
        return (self.samples[-1][1] / 1024) if self.samples else 0.0

    def __enter__(self) -> "RssSampler":
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(5)


# ---- self-metrics ------------------------------------------------------------------------

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


class Metrics:
    """A parsed Prometheus text scrape."""

    def __init__(self, text: str):
        self.text = text
        self.samples: list[tuple[str, dict, float]] = []
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            m = _SAMPLE.match(line)
            if m:
                labels = dict(_LABEL.findall(m.group(2) or ""))
                self.samples.append((m.group(1), labels, float(m.group(3))))

    def value(self, name: str, **labels) -> float:
        """Sum of the samples of `name` whose labels include `labels`."""
        return sum(v for n, ls, v in self.samples
                   if n == name and all(ls.get(k) == str(val) for k, val in labels.items()))

    def has(self, name: str) -> bool:
        return any(n == name for n, _, _ in self.samples)


def scrape(port: int, timeout: float = 5.0) -> Metrics:
    r = requests.get(f"http://{HOST}:{port}/metrics", timeout=timeout)
    r.raise_for_status()
    return Metrics(r.text)


# ---- OTLP payloads -----------------------------------------------------------------------

def trace_request(n: int, first_id: int, service: str = "robustness") -> tuple[bytes, list[bytes]]:
    """An encoded ExportTraceServiceRequest with `n` spans whose 8-byte span ids are
    first_id, first_id+1, ... (so a test knows exactly which spans must arrive)."""
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    kv = rs.resource.attributes.add()
    kv.key, kv.value.string_value = "service.name", service
    ss = rs.scope_spans.add()
    ss.scope.name = "robustness"
    ids = []
    now = time.time_ns()
    for i in range(n):
        span_id = (first_id + i).to_bytes(8, "big")
        ids.append(span_id)
        ss.spans.add(name=f"span-{first_id + i}", trace_id=(first_id + i).to_bytes(16, "big"), span_id=span_id,
                     start_time_unix_nano=now, end_time_unix_nano=now + 1000, kind=2)
    return req.SerializeToString(), ids


def gzip_bomb(uncompressed_bytes: int = 1 << 30, chunk: int = MIB) -> bytes:
    """A gzip member that inflates to `uncompressed_bytes` zeros (1 GiB -> ~1 MiB), built
    chunk by chunk so at most `chunk` zeros are ever in memory."""
    comp = zlib.compressobj(9, zlib.DEFLATED, 31)  # wbits 31: gzip container
    zeros = bytes(chunk)
    parts = []
    remaining = uncompressed_bytes
    while remaining > 0:
        n = min(chunk, remaining)
        parts.append(comp.compress(zeros if n == chunk else zeros[:n]))
        remaining -= n
    parts.append(comp.flush())
    return b"".join(parts)


def grpc_frame(message: bytes, compressed: bool) -> bytes:
    """A gRPC length-prefixed message: flag byte, 4-byte big-endian length, message."""
    return struct.pack(">BI", 1 if compressed else 0, len(message)) + message


# ---- HTTP/2 body swap proxy ----------------------------------------------------------------

_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
_DATA, _HEADERS, _RST_STREAM, _SETTINGS, _GOAWAY, _WINDOW_UPDATE = 0x0, 0x1, 0x3, 0x4, 0x7, 0x8
_END_STREAM, _ACK = 0x1, 0x1


def _recv_exact(sock: socket.socket, n: int) -> bytes | None:
    buf = bytearray()
    while len(buf) < n:
        try:
            chunk = sock.recv(n - len(buf))
        except OSError:
            return None
        if not chunk:
            return None
        buf += chunk
    return bytes(buf)


def _read_frame(sock: socket.socket):
    head = _recv_exact(sock, 9)
    if head is None:
        return None
    length = int.from_bytes(head[:3], "big")
    ftype, flags = head[3], head[4]
    stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
    payload = _recv_exact(sock, length) if length else b""
    if payload is None:
        return None
    return ftype, flags, stream, head, payload


class _FlowState:
    """The server's receive windows as a sender must track them (RFC 9113 section 6.9)."""

    def __init__(self):
        self.cond = threading.Condition()
        self.conn_window = 65535
        self.initial_stream_window = 65535
        self.max_frame = 16384
        self.stream_updates: dict[int, int] = {}
        self.stream_sent: dict[int, int] = {}
        self.reset_streams: set[int] = set()
        self.closed = False

    def stream_window(self, stream: int) -> int:
        return self.initial_stream_window + self.stream_updates.get(stream, 0) - self.stream_sent.get(stream, 0)


class GrpcBodySwapProxy:
    """Listens on a free loopback port and relays HTTP/2 to `target_port`, replacing the
    request body (all DATA frames of each client stream) with `body`, sent with END_STREAM
    and within the server's flow-control windows. Headers pass through untouched, so
    `grpc-encoding` is whatever the client set. Responses pass through untouched.
    `bytes_swapped` counts body bytes actually written to the server."""

    def __init__(self, target_port: int, body: bytes, send_timeout: float = 30.0):
        self.target_port, self.body, self.send_timeout = target_port, body, send_timeout
        self.bytes_swapped = 0
        self.errors: list[str] = []
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, 0))
        self._listener.listen(16)
        self.port = self._listener.getsockname()[1]
        self._socks: list[socket.socket] = []
        self._stopping = False
        threading.Thread(target=self._accept_loop, daemon=True).start()

    def _accept_loop(self):
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError as e:
                self.errors.append(f"cannot connect upstream: {e}")
                client.close()
                continue
            self._socks += [client, upstream]
            state = _FlowState()
            threading.Thread(target=self._client_to_server, args=(client, upstream, state), daemon=True).start()
            threading.Thread(target=self._server_to_client, args=(upstream, client, state), daemon=True).start()

    def _client_to_server(self, client, upstream, state: _FlowState):
        try:
            preface = _recv_exact(client, len(_PREFACE))
            if preface != _PREFACE:
                self.errors.append(f"not an HTTP/2 prior-knowledge client: {preface!r}")
                return
            upstream.sendall(preface)
            while True:
                frame = _read_frame(client)
                if frame is None:
                    return
                ftype, flags, stream, head, payload = frame
                if ftype == _DATA and stream:
                    if flags & _END_STREAM:
                        self._send_body(upstream, stream, state)
                    continue  # the client's own body is dropped
                upstream.sendall(head + payload)
        except OSError as e:
            if not self._stopping:
                self.errors.append(f"client->server: {e}")
        finally:
            for s in (client, upstream):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def _send_body(self, upstream, stream: int, state: _FlowState):
        deadline = time.monotonic() + self.send_timeout
        offset = 0
        body = self.body
        while True:
            with state.cond:
                while True:
                    if state.closed or stream in state.reset_streams:
                        self.errors.append(f"stream {stream} reset/closed after {offset} of {len(body)} bytes")
                        return
                    allowed = min(state.conn_window, state.stream_window(stream), state.max_frame,
                                  len(body) - offset)
                    if allowed > 0 or offset == len(body):
                        break
                    if time.monotonic() > deadline:
                        self.errors.append(f"flow control stalled at {offset} of {len(body)} bytes")
                        return
                    state.cond.wait(0.1)
                n = max(allowed, 0)
                state.conn_window -= n
                state.stream_sent[stream] = state.stream_sent.get(stream, 0) + n
            last = offset + n >= len(body)
            head = n.to_bytes(3, "big") + bytes([_DATA, _END_STREAM if last else 0]) + stream.to_bytes(4, "big")
            upstream.sendall(head + body[offset:offset + n])
            offset += n
            self.bytes_swapped += n
            if last:
                return

    def _server_to_client(self, upstream, client, state: _FlowState):
        try:
            while True:
                frame = _read_frame(upstream)
                if frame is None:
                    return
                ftype, flags, stream, head, payload = frame
                with state.cond:
                    if ftype == _SETTINGS and not flags & _ACK:
                        for i in range(0, len(payload) - 5, 6):
                            ident, value = struct.unpack(">HI", payload[i:i + 6])
                            if ident == 0x4:
                                state.initial_stream_window = value
                            elif ident == 0x5:
                                state.max_frame = value
                    elif ftype == _WINDOW_UPDATE:
                        inc = int.from_bytes(payload[:4], "big") & 0x7FFFFFFF
                        if stream == 0:
                            state.conn_window += inc
                        else:
                            state.stream_updates[stream] = state.stream_updates.get(stream, 0) + inc
                    elif ftype == _RST_STREAM:
                        state.reset_streams.add(stream)
                    elif ftype == _HEADERS and stream and flags & _END_STREAM:
                        state.reset_streams.add(stream)  # the server answered: stop sending
                    elif ftype == _GOAWAY:
                        state.closed = True
                    state.cond.notify_all()
                client.sendall(head + payload)
        except OSError as e:
            if not self._stopping:
                self.errors.append(f"server->client: {e}")
        finally:
            with state.cond:
                state.closed = True
                state.cond.notify_all()
            try:
                client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self):
        self._stopping = True
        self._listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    def __enter__(self) -> "GrpcBodySwapProxy":
        return self

    def __exit__(self, *exc):
        self.close()


# ---- plain TCP relay ---------------------------------------------------------------------

class TcpRelay:
    """Forwards TCP connections from `listen_port` (bound when `start()` is called) to
    `target_port` on loopback."""

    def __init__(self, listen_port: int, target_port: int):
        self.listen_port, self.target_port = listen_port, target_port
        self._listener = None
        self._socks: list[socket.socket] = []
        self.connections = 0

    def start(self) -> "TcpRelay":
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind((HOST, self.listen_port))
        self._listener.listen(64)
        threading.Thread(target=self._accept_loop, daemon=True).start()
        return self

    def _accept_loop(self):
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            self.connections += 1
            self._socks += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(src, dst):
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass

    def close(self):
        if self._listener is not None:
            self._listener.close()
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass


# ---- loadgen -----------------------------------------------------------------------------

@dataclass
class LoadgenReport:
    text: str
    returncode: int | None
    items_sent: int = 0
    items_accepted: int = 0
    accepted_requests: int = 0
    failed_requests: int = 0
    outcomes: dict = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str, returncode: int | None) -> "LoadgenReport":
        rep = cls(text, returncode)
        m = re.search(r"^sent (\d+) \S+ in (\d+) requests", text, re.M)
        if m:
            rep.items_sent = int(m.group(1))
        m = re.search(r"^accepted (\d+) \S+ in (\d+) requests; (\d+) requests failed", text, re.M)
        if m:
            rep.items_accepted, rep.accepted_requests, rep.failed_requests = map(int, m.groups())
        for line in text.splitlines():
            m = re.match(r"^  (.*): (\d+)$", line)
            if m:
                rep.outcomes[m.group(1)] = rep.outcomes.get(m.group(1), 0) + int(m.group(2))
        return rep

    @property
    def parsed(self) -> bool:
        return bool(re.search(r"^accepted \d+ ", self.text, re.M))

    def outcome_kinds(self) -> dict:
        """Outcomes with the server's free-text message cut off: {"grpc ResourceExhausted": n, ...}."""
        kinds: dict = {}
        for outcome, n in self.outcomes.items():
            kind = outcome.split(":", 1)[0]
            kinds[kind] = kinds.get(kind, 0) + n
        return kinds


class Loadgen:
    """`sluice loadgen ARGS` in the background; `wait()` returns its parsed report."""

    def __init__(self, sluice_bin, args, log_path: Path):
        self.args = [str(sluice_bin), "loadgen", *[str(a) for a in args]]
        self.log_path = Path(log_path)
        self._log = open(self.log_path, "wb")
        self.popen = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT,
                                      stdin=subprocess.DEVNULL, env={**os.environ, "NO_COLOR": "1"})

    def wait(self, timeout: float) -> LoadgenReport:
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.popen.send_signal(signal.SIGKILL)
            self.popen.wait(5)
            self._log.close()
            raise AssertionError(f"loadgen {self.args} did not finish within {timeout}s; output:\n"
                                 + self.log_path.read_text(errors="replace"))
        self._log.close()
        return LoadgenReport.parse(self.log_path.read_text(errors="replace"), self.popen.returncode)

    def kill(self):
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(5)
        self._log.close()
