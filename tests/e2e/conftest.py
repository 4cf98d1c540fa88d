"""pytest fixtures for sluice's end-to-end tests.

`sink`: an in-process OTLP backend (see sink.py). `sluice_bin`: the sluice
binary under test ($SLUICE_BIN, else <repo>/target/debug/sluice; a missing
binary fails the test). `run_sluice(config_yaml)`: a context manager that
writes the config under tmp_path, runs `sluice --config FILE`, waits for its
listening ports and stops it with SIGTERM.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path

import pytest
import yaml

from peers import Proc
from sink import Sink

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sink():
    with Sink() as s:
        yield s


@pytest.fixture(scope="session")
def sluice_bin() -> Path:
    path = Path(os.environ.get("SLUICE_BIN") or REPO_ROOT / "target" / "debug" / "sluice")
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"sluice binary not found at {path}: run `cargo build` or set SLUICE_BIN", pytrace=False)
    return path


def receiver_ports(config_yaml: str) -> list[int]:
    """Ports of the `receivers.*.protocols.*.endpoint` entries of a collector-style config."""
    config = yaml.safe_load(config_yaml) or {}
    ports = []
    for receiver in (config.get("receivers") or {}).values():
        for proto in ((receiver or {}).get("protocols") or {}).values():
            endpoint = (proto or {}).get("endpoint")
            if endpoint:
                ports.append(int(str(endpoint).rsplit(":", 1)[1]))
    return ports


@pytest.fixture
def run_sluice(sluice_bin, tmp_path):
    """run_sluice(config_yaml, ports=None, env=None, **proc_kwargs) -> Proc context manager.

    Waits for `ports`, by default the receiver endpoints found in the config.
    """
    seq = itertools.count(1)

    def run(config_yaml: str, ports=None, env=None, **proc_kwargs) -> Proc:
        n = next(seq)
        config = tmp_path / f"sluice-{n}.yaml"
        config.write_text(config_yaml)
        return Proc([sluice_bin, "--config", config], tmp_path / f"sluice-{n}.log", name="sluice",
                    ports=receiver_ports(config_yaml) if ports is None else ports,
                    env={"NO_COLOR": "1", **(env or {})}, **proc_kwargs)

    return run
