"""In-process OTLP backend ("sink") for end-to-end tests.

Serves OTLP/gRPC and OTLP/HTTP (protobuf; gzip, zstd, deflate or none) on free
loopback ports, decodes every request with `opentelemetry-proto`, and keeps the
decoded Export*ServiceRequest messages per signal. Failure injection
(`fail_with`), a slow-backend delay (`delay_seconds`) and a record of every
request (transport, signal, encoding, status) let tests check retry,
backpressure and compression behaviour of the agent under test.
"""

from __future__ import annotations

import gzip
import http.server
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass

import grpc
import zstandard
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as logs_pb
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2 as metrics_pb
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2 as trace_pb

HOST = "127.0.0.1"
MAX_MESSAGE_BYTES = 64 * 1024 * 1024

# signal -> (request type, response type, HTTP path)
SIGNALS = {
    "traces": (trace_pb.ExportTraceServiceRequest, trace_pb.ExportTraceServiceResponse, "/v1/traces"),
    "metrics": (metrics_pb.ExportMetricsServiceRequest, metrics_pb.ExportMetricsServiceResponse, "/v1/metrics"),
    "logs": (logs_pb.ExportLogsServiceRequest, logs_pb.ExportLogsServiceResponse, "/v1/logs"),
}
HTTP_PATHS = {path: signal for signal, (_, _, path) in SIGNALS.items()}
GRPC_SERVICES = {
    "traces": trace_pb.DESCRIPTOR.services_by_name["TraceService"].full_name,
    "metrics": metrics_pb.DESCRIPTOR.services_by_name["MetricsService"].full_name,
    "logs": logs_pb.DESCRIPTOR.services_by_name["LogsService"].full_name,
}


@dataclass
class RequestRecord:
    transport: str  # "grpc" | "http"
    signal: str  # "traces" | "metrics" | "logs"
    encoding: str  # Content-Encoding (HTTP) / compression seen in the gRPC message; "identity" if none
    status: int  # HTTP status, or gRPC status code value (0 = OK)
    size: int  # body / gRPC message size as sent (compressed if it was)


class Sink:
    """Collecting OTLP backend. Use `start()`/`stop()` or as a context manager."""

    def __init__(self):
        self.traces: list = []  # ExportTraceServiceRequest
        self.metrics: list = []  # ExportMetricsServiceRequest
        self.logs: list = []  # ExportLogsServiceRequest
        self.requests: list[RequestRecord] = []  # every request, accepted or not
        self.delay_seconds = 0.0  # sleep before answering each request
        self._fail_remaining: int | None = 0  # 0: no failure; None: until recover()
        self._grpc_code = grpc.StatusCode.UNAVAILABLE
        self._http_status = 503
        self._cond = threading.Condition()
        self._grpc_server = None
        self._http_server = None
        self.grpc_port = self.http_port = None

    # ---- lifecycle -------------------------------------------------------

    def start(self) -> "Sink":
        self._grpc_server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=16),
            options=[("grpc.max_receive_message_length", MAX_MESSAGE_BYTES), ("grpc.per_message_decompression", 0)],
        )
        self._grpc_server.add_generic_rpc_handlers([_grpc_handler(self, signal) for signal in SIGNALS])
        self.grpc_port = self._grpc_server.add_insecure_port(f"{HOST}:0")
        self._grpc_server.start()

        self._http_server = http.server.ThreadingHTTPServer((HOST, 0), _make_http_handler(self))
        self._http_server.daemon_threads = True
        self.http_port = self._http_server.server_address[1]
        threading.Thread(target=self._http_server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=1).wait(5)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None

    def __enter__(self) -> "Sink":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        """host:port, as gRPC clients want it."""
        return f"{HOST}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        """Base URL; OTLP/HTTP clients append /v1/<signal>."""
        return f"http://{HOST}:{self.http_port}"

    # ---- behaviour -------------------------------------------------------

    def fail_with(self, count: int | None = None, grpc_code=grpc.StatusCode.UNAVAILABLE, http_status: int = 503):
        """Reject the next `count` requests (all of them while count is None, until `recover()`)."""
        with self._cond:
            self._fail_remaining = count
            self._grpc_code, self._http_status = grpc_code, http_status

    def recover(self) -> None:
        """Stop injecting failures."""
        with self._cond:
            self._fail_remaining = 0

    def _should_fail(self) -> bool:
        with self._cond:
            if self._fail_remaining is None:
                return True
            if self._fail_remaining > 0:
                self._fail_remaining -= 1
                return True
            return False

    def _record(self, rec: RequestRecord, signal: str | None = None, message=None) -> None:
        with self._cond:
            self.requests.append(rec)
            if message is not None:
                getattr(self, signal).append(message)
            self._cond.notify_all()

    # ---- queries ---------------------------------------------------------

    def spans(self) -> list:
        with self._cond:
            return [s for req in self.traces for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans]

    def log_records(self) -> list:
        with self._cond:
            return [r for req in self.logs for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records]

    def span_count(self) -> int:
        return len(self.spans())

    def log_count(self) -> int:
        return len(self.log_records())

    def datapoint_count(self) -> int:
        with self._cond:
            total = 0
            for req in self.metrics:
                for rm in req.resource_metrics:
                    for sm in rm.scope_metrics:
                        for m in sm.metrics:
                            kind = m.WhichOneof("data")
                            if kind:
                                total += len(getattr(m, kind).data_points)
            return total

    def request_count(self, signal: str | None = None, accepted_only: bool = False) -> int:
        with self._cond:
            return sum(
                1
                for r in self.requests
                if (signal is None or r.signal == signal) and (not accepted_only or r.status in (0, 200))
            )

    def encodings(self) -> set[str]:
        with self._cond:
            return {r.encoding for r in self.requests}

    def wait_for(self, predicate, timeout: float = 10.0) -> bool:
        """Wait until `predicate()` is true; returns False after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while not predicate():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._cond.wait(min(remaining, 0.1))
            return True

    def clear(self) -> None:
        with self._cond:
            self.traces.clear()
            self.metrics.clear()
            self.logs.clear()
            self.requests.clear()


# ---- gRPC ------------------------------------------------------------------
# grpcio hides the grpc-encoding header from handlers, so the server runs with
# per-message decompression off and the sink decompresses (and so observes the
# compression of) each message itself.

def _sniff_encoding(raw: bytes) -> str:
    # An OTLP export request starts with tag 0x0a (field 1), so magic numbers are unambiguous.
    if raw[:2] == b"\x1f\x8b":
        return "gzip"
    if raw[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    if raw[:1] == b"\x78":
        return "deflate"
    return "identity"


def _grpc_decoder(signal: str):
    def decode(raw: bytes):
        encoding = _sniff_encoding(raw)
        return encoding, len(raw), SIGNALS[signal][0].FromString(_decode_body(raw, encoding))

    return decode


def _grpc_handler(sink: Sink, signal: str):
    def export(decoded, context):
        encoding, size, request = decoded
        if sink.delay_seconds:
            time.sleep(sink.delay_seconds)
        if sink._should_fail():
            code = sink._grpc_code
            sink._record(RequestRecord("grpc", signal, encoding, code.value[0], size))
            context.abort(code, "injected failure")
        sink._record(RequestRecord("grpc", signal, encoding, 0, size), signal, request)
        return SIGNALS[signal][1]()

    return grpc.method_handlers_generic_handler(
        GRPC_SERVICES[signal],
        {"Export": grpc.unary_unary_rpc_method_handler(
            export, request_deserializer=_grpc_decoder(signal), response_serializer=lambda m: m.SerializeToString()
        )},
    )


# ---- HTTP ------------------------------------------------------------------


def _decode_body(body: bytes, encoding: str) -> bytes:
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "zstd":
        return zstandard.ZstdDecompressor().decompressobj().decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


def _make_http_handler(sink: Sink):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):  # keep pytest output clean
            pass

        def _read_body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunk = self.rfile.read(size)
                    self.rfile.readline()
                    if size == 0:
                        return b"".join(chunks)
                    chunks.append(chunk)
            return self.rfile.read(int(self.headers.get("Content-Length", 0)))

        def _reply(self, status: int, body: bytes = b"", content_type: str = "application/x-protobuf"):
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self):
            body = self._read_body()
            signal = HTTP_PATHS.get(self.path)
            encoding = self.headers.get("Content-Encoding", "identity").strip().lower() or "identity"
            if signal is None:
                return self._reply(404, b"unknown path", "text/plain")
            if sink.delay_seconds:
                time.sleep(sink.delay_seconds)
            if sink._should_fail():
                sink._record(RequestRecord("http", signal, encoding, sink._http_status, len(body)))
                return self._reply(sink._http_status, b"injected failure", "text/plain")
            content_type = self.headers.get("Content-Type", "").split(";")[0].strip()
            try:
                if content_type != "application/x-protobuf":
                    raise ValueError(f"unsupported Content-Type {content_type!r}")
                message = SIGNALS[signal][0].FromString(_decode_body(body, encoding))
            except Exception as exc:  # malformed request: record and reject
                sink._record(RequestRecord("http", signal, encoding, 400, len(body)))
                return self._reply(400, str(exc).encode(), "text/plain")
            sink._record(RequestRecord("http", signal, encoding, 200, len(body)), signal, message)
            self._reply(200, SIGNALS[signal][1]().SerializeToString())

    return Handler
