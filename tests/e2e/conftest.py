"""`okr serve` as a real process, configured like a deployment, through environment variables."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from services.settings import Settings

STARTUP_S = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def environment_for(settings: Settings, port: int) -> dict[str, str]:
    env = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
    env |= {
        "OKR_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "OKR_TOPIC_PREFIX": settings.topic_prefix,
        "OKR_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "OKR_EVENT_STORE_URL": settings.event_store_url,
        "OKR_READ_STORE_URL": settings.read_store_url,
        "OKR_HTTP_HOST": "127.0.0.1",
        "OKR_HTTP_PORT": str(port),
        "OKR_API_KEYS": settings.api_keys,
        "OKR_API_KEYS_FILE": str(settings.api_keys_file),
        "OKR_KAFKA_COMMAND_PRINCIPALS": settings.kafka_command_principals,
    }
    return env


@dataclass
class RunningService:
    url: str
    process: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """SIGTERM, as an orchestrator stops it; SIGKILL if it has not exited within 30 s."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_serving(settings: Settings, workdir: Path) -> RunningService:
    """`okr serve` started with `settings` as its environment, once `/health` says ok."""
    port = free_port()
    log = workdir / "service.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.cli.main", "serve"],
            env=environment_for(settings, port),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    service = RunningService(url=f"http://127.0.0.1:{port}", process=process, log=log)
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            assert process.poll() is None, f"okr serve exited:\n{log.read_text()}"
            try:
                if httpx.get(f"{service.url}/health", timeout=2).status_code == 200:
                    return service
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"not healthy in time:\n{log.read_text()}"
            time.sleep(0.2)
    except BaseException:
        service.stop()
        raise


@pytest.fixture
def service(settings: Settings, tmp_path: Path) -> Iterator[RunningService]:
    """A started `okr serve`, healthy, stopped (SIGTERM) at the end of the test."""
    running = start_serving(settings, tmp_path)
    try:
        yield running
    finally:
        running.stop()
