"""`okr kafka start | stop | status` as a user runs them: idempotent, one broker at most."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def okr(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "services.cli.main", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def brokers_using(data_dir: Path) -> list[int]:
    """Pids of Kafka processes whose command line names this data dir."""
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes()
            state = (proc / "stat").read_text().split()[2]
        except OSError:
            continue
        if b"kafka.Kafka" in cmdline and str(data_dir).encode() in cmdline and state != "Z":
            pids.append(int(proc.name))
    return pids


def test_start_twice_leaves_one_broker_and_stop_leaves_none(tmp_path: Path) -> None:
    data_dir = tmp_path / "kafka"
    env = {
        **os.environ,
        "OKR_LOCAL_KAFKA_PORT": str(free_port()),
        "OKR_LOCAL_KAFKA_CONTROLLER_PORT": str(free_port()),
        "OKR_LOCAL_KAFKA_DATA_DIR": str(data_dir),
        "OKR_LOCAL_KAFKA_HEAP": "256m",
    }
    try:
        first = okr(env, "kafka", "start")
        assert first.returncode == 0, first.stderr
        assert "kafka started" in first.stdout
        second = okr(env, "kafka", "start")
        assert second.returncode == 0, second.stderr
        assert "already running" in second.stdout
        assert len(brokers_using(data_dir)) == 1

        status = okr(env, "kafka", "status")
        assert status.returncode == 0 and "running" in status.stdout
    finally:
        stopped = okr(env, "kafka", "stop")
    assert stopped.returncode == 0 and "kafka stopped" in stopped.stdout
    assert brokers_using(data_dir) == []
    assert okr(env, "kafka", "status").returncode == 3
    again = okr(env, "kafka", "stop")
    assert "was not running" in again.stdout
