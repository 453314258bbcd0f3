"""A real Apache Kafka broker for machines without Docker: `okr kafka start | stop | status`.

The jars of `org.apache.kafka:kafka_2.13` and its runtime dependencies are resolved from Maven
Central by Maven into a cache outside git (or taken from `KAFKA_HOME/libs`), the KRaft storage is
formatted once, and one combined controller+broker runs on 127.0.0.1 as a detached process whose
pid is kept next to its data, so every command is idempotent.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from services.settings import Settings

LOG4J_VERSION = "2.25.3"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"


class LocalKafkaError(Exception):
    """The local broker cannot be resolved, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class LocalKafka:
    """Where one local broker lives and how it is reached."""

    version: str
    port: int
    controller_port: int
    data_dir: Path
    cache_dir: Path
    heap: str
    kafka_home: Path | None = None

    @classmethod
    def from_settings(cls, settings: Settings) -> LocalKafka:
        return cls(
            version=settings.local_kafka_version,
            port=settings.local_kafka_port,
            controller_port=settings.local_kafka_controller_port,
            data_dir=settings.local_kafka_data_dir.resolve(),
            cache_dir=settings.local_kafka_cache_dir.expanduser().resolve(),
            heap=settings.local_kafka_heap,
            kafka_home=settings.kafka_home,
        )

    @property
    def bootstrap_servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.data_dir / "kafka.pid"

    @property
    def log_file(self) -> Path:
        return self.data_dir / "server.log"

    @property
    def log_dirs(self) -> Path:
        return self.data_dir / "logs"

    @property
    def jar_dir(self) -> Path:
        return self.cache_dir / self.version / "lib"


# --- resolving the jars -------------------------------------------------------------------------


def require_java() -> str:
    """Path of a Java 17+ runtime, or a clear error."""
    java = shutil.which("java")
    if java is None:
        raise LocalKafkaError("java not found: install a Java 17+ runtime (e.g. openjdk-17-jre)")
    output = subprocess.run([java, "-version"], capture_output=True, text=True, check=False).stderr
    match = re.search(r'version "(\d+)', output)
    if match is None or int(match.group(1)) < 17:
        raise LocalKafkaError(f"Kafka 4 needs Java 17 or newer; {java} reports: {output.strip()}")
    return java


def _pom(version: str) -> str:
    dependencies = [
        ("org.apache.kafka", "kafka_2.13", version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", LOG4J_VERSION),
        ("org.apache.logging.log4j", "log4j-core", LOG4J_VERSION),
    ]
    rendered = "\n".join(
        f"    <dependency><groupId>{g}</groupId><artifactId>{a}</artifactId>"
        f"<version>{v}</version></dependency>"
        for g, a, v in dependencies
    )
    return f"""<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.okr-ledger</groupId>
  <artifactId>kafka-runtime</artifactId>
  <version>{version}</version>
  <packaging>pom</packaging>
  <dependencies>
{rendered}
  </dependencies>
</project>
"""


def resolve_classpath(kafka: LocalKafka) -> str:
    """The broker's classpath, resolving the jars through Maven on first use."""
    if kafka.kafka_home is not None:
        libs = kafka.kafka_home / "libs"
        if not libs.is_dir():
            raise LocalKafkaError(f"KAFKA_HOME={kafka.kafka_home} has no libs/ directory")
        return f"{libs}/*"
    marker = kafka.jar_dir / ".resolved"
    if not marker.exists():
        _resolve_with_maven(kafka)
        marker.touch()
    return f"{kafka.jar_dir}/*"


def _resolve_with_maven(kafka: LocalKafka) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise LocalKafkaError(
            "mvn not found: install Maven (apt-get install maven) to resolve the Kafka jars, "
            "or set KAFKA_HOME to an unpacked Apache Kafka distribution"
        )
    project = kafka.cache_dir / kafka.version
    project.mkdir(parents=True, exist_ok=True)
    (project / "pom.xml").write_text(_pom(kafka.version))
    if kafka.jar_dir.exists():
        shutil.rmtree(kafka.jar_dir)
    command = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(project / "pom.xml"),
        "dependency:copy-dependencies",
        f"-DoutputDirectory={kafka.jar_dir}",
        "-DincludeScope=runtime",
    ]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(
            f"Maven could not resolve org.apache.kafka:kafka_2.13:{kafka.version}:\n"
            f"{result.stdout[-2000:]}{result.stderr[-2000:]}"
        )


# --- configuration and storage ------------------------------------------------------------------


def _server_properties(kafka: LocalKafka) -> str:
    return f"""# Written by `okr kafka start`; one combined KRaft controller+broker on loopback.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:{kafka.controller_port}
listeners=PLAINTEXT://127.0.0.1:{kafka.port},CONTROLLER://127.0.0.1:{kafka.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{kafka.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={kafka.log_dirs}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def _log4j_properties(kafka: LocalKafka) -> str:
    return f"""rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName={kafka.log_file}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
"""


def _write_config(kafka: LocalKafka) -> tuple[Path, Path]:
    kafka.data_dir.mkdir(parents=True, exist_ok=True)
    server = kafka.data_dir / "server.properties"
    log4j = kafka.data_dir / "log4j2.properties"
    server.write_text(_server_properties(kafka))
    log4j.write_text(_log4j_properties(kafka))
    return server, log4j


def _java_command(java: str, classpath: str, log4j: Path, heap: str, *args: str) -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
        *args,
    ]


def _format_storage(
    java: str, classpath: str, kafka: LocalKafka, server: Path, log4j: Path
) -> None:
    """Format KRaft storage once; a formatted directory keeps its cluster id and data."""
    if (kafka.log_dirs / "meta.properties").exists():
        return
    cluster_id = uuid.uuid4().hex[:22]
    command = _java_command(
        java, classpath, log4j, "256m", STORAGE_TOOL, "format", "-t", cluster_id, "-c", str(server)
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(
            f"formatting {kafka.log_dirs} failed:\n{result.stdout}{result.stderr}"
        )


# --- process control ----------------------------------------------------------------------------


def running_pid(kafka: LocalKafka) -> int | None:
    """The pid of our broker if it is alive (guarding against a reused pid)."""
    try:
        pid = int(kafka.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    if MAIN_CLASS.encode() not in cmdline or str(kafka.data_dir).encode() not in cmdline:
        return None
    return pid


def _port_open(port: int) -> bool:
    """Whether something listens on the port. A port inside the kernel's ephemeral range can be
    "open" by a TCP self-connection (the probe's own source port happened to be the target) while
    nothing listens: that is not a broker, and it is not counted as one."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        if sock.connect_ex(("127.0.0.1", port)) != 0:
            return False
        return bool(sock.getsockname() != sock.getpeername())


def start(kafka: LocalKafka, timeout_s: float = 90.0) -> tuple[int, bool]:
    """Start the broker unless it runs already; returns (pid, started_now)."""
    pid = running_pid(kafka)
    if pid is not None:
        return pid, False
    if _port_open(kafka.port):
        raise LocalKafkaError(
            f"port {kafka.port} is taken by another process; stop it or set OKR_LOCAL_KAFKA_PORT"
        )
    java = require_java()
    classpath = resolve_classpath(kafka)
    server, log4j = _write_config(kafka)
    _format_storage(java, classpath, kafka, server, log4j)
    command = _java_command(java, classpath, log4j, kafka.heap, MAIN_CLASS, str(server))
    with (kafka.data_dir / "stdout.log").open("ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=kafka.data_dir,
        )
    kafka.pid_file.write_text(str(process.pid))
    _wait_until_ready(kafka, process, timeout_s)
    return process.pid, True


def _wait_until_ready(
    kafka: LocalKafka, process: subprocess.Popen[bytes], timeout_s: float
) -> None:
    from services.kafka.admin import probe_kafka
    from services.settings import Settings

    settings = Settings(kafka_bootstrap_servers=kafka.bootstrap_servers)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            kafka.pid_file.unlink(missing_ok=True)
            raise LocalKafkaError(
                f"Kafka exited with code {process.returncode}; see {kafka.log_file}"
            )
        if _port_open(kafka.port) and asyncio.run(probe_kafka(settings, 2.0)) is None:
            return
        time.sleep(0.3)
    stop(kafka)
    raise LocalKafkaError(f"Kafka did not answer within {timeout_s:.0f}s; see {kafka.log_file}")


def stop(kafka: LocalKafka, timeout_s: float = 60.0) -> bool:
    """Stop the broker cleanly (SIGTERM, then SIGKILL after the timeout); False if none ran."""
    pid = running_pid(kafka)
    if pid is None:
        kafka.pid_file.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)
        while _alive(pid):
            time.sleep(0.1)
    kafka.pid_file.unlink(missing_ok=True)
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A child of ours that exited stays a zombie until reaped; reap it if it is ours.
    try:
        reaped, _ = os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        reaped = 0
    if reaped == pid:
        return False
    state = (
        Path(f"/proc/{pid}/stat").read_text().split()[2] if Path(f"/proc/{pid}").exists() else "X"
    )
    return state not in ("Z", "X")
