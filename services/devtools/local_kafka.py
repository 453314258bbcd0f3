"""A real Apache Kafka for machines without Docker: `okr kafka start | stop | status`.

The jars of `org.apache.kafka:kafka_2.13` and its runtime dependencies are resolved from Maven
Central by Maven into a cache outside git (or taken from `KAFKA_HOME/libs`), the KRaft storage is
formatted once, and each node runs on 127.0.0.1 as a detached process whose pid is kept next to
its data, so every command is idempotent.

One node by default: a combined controller+broker in the data dir itself. With `brokers=3`, a
replicated cluster (docs/decisions/0021-local-kafka-cluster.md): three combined nodes, ids 1-3,
each in `<data dir>/node-<id>`, with client ports port, port+1, port+2 and controller ports
controller_port, +1, +2 (moved to follow the client ports when the two ranges would overlap),
all three voters of the controller quorum. Nodes start in parallel, and one node can be stopped,
killed and started again while the others run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from services.settings import Settings

LOG4J_VERSION = "2.25.3"
MAIN_CLASS = "kafka.Kafka"
STORAGE_TOOL = "kafka.tools.StorageTool"
MAX_BROKERS = 5
SINGLE_BROKER_HEAP = "1g"
CLUSTER_NODE_HEAP = "384m"
BIND_ATTEMPTS = 3
CLUSTER_FILE = "cluster.properties"
"""In a cluster's data dir: its node count and the cluster id every node is formatted with."""

T = TypeVar("T")


class LocalKafkaError(Exception):
    """The local broker cannot be resolved, started or stopped; the message says what to do."""


@dataclass(frozen=True)
class KafkaNode:
    """One combined controller+broker of the local Kafka."""

    node_id: int
    port: int
    controller_port: int
    data_dir: Path

    @property
    def address(self) -> str:
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
    def server_properties(self) -> Path:
        return self.data_dir / "server.properties"


@dataclass(frozen=True)
class LocalKafka:
    """Where the local Kafka lives (one broker, or a cluster of `brokers` nodes) and how it is
    reached."""

    version: str
    port: int
    controller_port: int
    data_dir: Path
    cache_dir: Path
    heap: str
    kafka_home: Path | None = None
    brokers: int = 1

    def __post_init__(self) -> None:
        if not 1 <= self.brokers <= MAX_BROKERS:
            raise LocalKafkaError(f"brokers must be 1 to {MAX_BROKERS}, not {self.brokers}")
        last = self.nodes[-1]
        if max(last.port, last.controller_port) > 65535:
            raise LocalKafkaError(
                f"node {last.node_id} would listen past port 65535 ({last.port}, "
                f"{last.controller_port}): lower OKR_LOCAL_KAFKA_PORT / _CONTROLLER_PORT"
            )

    @classmethod
    def from_settings(cls, settings: Settings, brokers: int | None = None) -> LocalKafka:
        """`brokers=None`: as many nodes as the data dir holds (one if it holds none yet)."""
        data_dir = settings.local_kafka_data_dir.resolve()
        count = brokers or recorded_brokers(data_dir) or 1
        return cls(
            version=settings.local_kafka_version,
            port=settings.local_kafka_port,
            controller_port=settings.local_kafka_controller_port,
            data_dir=data_dir,
            cache_dir=settings.local_kafka_cache_dir.expanduser().resolve(),
            heap=settings.local_kafka_heap
            or (SINGLE_BROKER_HEAP if count == 1 else CLUSTER_NODE_HEAP),
            kafka_home=settings.kafka_home,
            brokers=count,
        )

    @property
    def nodes(self) -> tuple[KafkaNode, ...]:
        controllers = self.controller_port
        if controllers < self.port + self.brokers and self.port < controllers + self.brokers:
            controllers = self.port + self.brokers
        return tuple(
            KafkaNode(
                node_id=index + 1,
                port=self.port + index,
                controller_port=controllers + index,
                data_dir=self.data_dir
                if self.brokers == 1
                else self.data_dir / f"node-{index + 1}",
            )
            for index in range(self.brokers)
        )

    def node(self, node_id: int) -> KafkaNode:
        for node in self.nodes:
            if node.node_id == node_id:
                return node
        raise LocalKafkaError(f"no node {node_id}: this Kafka has nodes 1 to {self.brokers}")

    @property
    def bootstrap_servers(self) -> str:
        return ",".join(node.address for node in self.nodes)

    @property
    def cluster_file(self) -> Path:
        return self.data_dir / CLUSTER_FILE

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


def _read_properties(path: Path) -> dict[str, str]:
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return {}
    pairs = (line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def recorded_brokers(data_dir: Path) -> int | None:
    """How many nodes the cluster in this data dir has; None when it holds no cluster."""
    nodes = _read_properties(data_dir / CLUSTER_FILE).get("nodes", "")
    return int(nodes) if nodes.isdigit() else None


def _claim_data_dir(kafka: LocalKafka) -> str:
    """Check that the data dir holds this layout (or nothing yet); returns the cluster id to
    format new storage with: a cluster's is kept in its cluster file, so a node formatted later
    (its directory wiped) joins the same cluster."""
    recorded = recorded_brokers(kafka.data_dir)
    if recorded is not None and recorded != kafka.brokers:
        raise LocalKafkaError(
            f"{kafka.data_dir} holds a {recorded}-node cluster: start it with --brokers "
            f"{recorded}, or set OKR_LOCAL_KAFKA_DATA_DIR to another directory"
        )
    if kafka.brokers == 1:
        return uuid.uuid4().hex[:22]
    if (kafka.data_dir / "logs" / "meta.properties").exists():
        raise LocalKafkaError(
            f"{kafka.data_dir} holds a single broker: stop it and set OKR_LOCAL_KAFKA_DATA_DIR "
            "to another directory for a cluster"
        )
    cluster_id = _read_properties(kafka.cluster_file).get("cluster.id")
    if cluster_id is None:
        cluster_id = uuid.uuid4().hex[:22]
        kafka.data_dir.mkdir(parents=True, exist_ok=True)
        kafka.cluster_file.write_text(
            f"# Written by `okr kafka start --brokers {kafka.brokers}`.\n"
            f"nodes={kafka.brokers}\ncluster.id={cluster_id}\n"
        )
    return cluster_id


def _server_properties(kafka: LocalKafka, node: KafkaNode) -> str:
    voters = ",".join(f"{n.node_id}@127.0.0.1:{n.controller_port}" for n in kafka.nodes)
    replicas = min(kafka.brokers, 3)
    min_isr = max(1, replicas - 1)
    return f"""# Written by `okr kafka start`: node {node.node_id} of {kafka.brokers}, a combined
# KRaft controller+broker on loopback. Internal topics: {replicas} replicas, {min_isr} in sync.
process.roles=broker,controller
node.id={node.node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{node.port},CONTROLLER://127.0.0.1:{node.controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{node.port}
controller.listener.names=CONTROLLER
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
log.dirs={node.log_dirs}
num.partitions=1
default.replication.factor={replicas}
min.insync.replicas={min_isr}
offsets.topic.replication.factor={replicas}
offsets.topic.num.partitions=10
transaction.state.log.replication.factor={replicas}
transaction.state.log.min.isr={min_isr}
share.coordinator.state.topic.replication.factor={replicas}
share.coordinator.state.topic.min.isr={min_isr}
broker.heartbeat.interval.ms=1000
broker.session.timeout.ms=6000
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
"""


def _log4j_properties(node: KafkaNode) -> str:
    return f"""rootLogger.level=INFO
rootLogger.appenderRef.file.ref=FILE
appender.file.type=File
appender.file.name=FILE
appender.file.fileName={node.log_file}
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
"""


def _write_config(kafka: LocalKafka, node: KafkaNode) -> Path:
    """Write the node's server and log4j configuration; returns the log4j file."""
    node.data_dir.mkdir(parents=True, exist_ok=True)
    log4j = node.data_dir / "log4j2.properties"
    node.server_properties.write_text(_server_properties(kafka, node))
    log4j.write_text(_log4j_properties(node))
    return log4j


BROKER_JVM = ("-XX:+UseG1GC",)
TOOL_JVM = ("-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
"""A tool that runs for a second starts faster without the optimising compiler (~1.0 s, not
1.7 s, to format a node's storage)."""


def _java_command(
    java: str,
    classpath: str,
    log4j: Path,
    heap: str,
    *args: str,
    flags: tuple[str, ...] = BROKER_JVM,
) -> list[str]:
    return [
        java,
        f"-Xmx{heap}",
        f"-Xms{heap}",
        *flags,
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        "-cp",
        classpath,
        *args,
    ]


def _format_storage(
    java: str, classpath: str, node: KafkaNode, cluster_id: str, log4j: Path
) -> None:
    """Format KRaft storage once; a formatted directory keeps its cluster id and data."""
    if (node.log_dirs / "meta.properties").exists():
        return
    command = _java_command(
        java,
        classpath,
        log4j,
        "256m",
        STORAGE_TOOL,
        "format",
        "-t",
        cluster_id,
        "-c",
        str(node.server_properties),
        flags=TOOL_JVM,
    )
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(f"formatting {node.log_dirs} failed:\n{result.stdout}{result.stderr}")


# --- process control ----------------------------------------------------------------------------


def running_pid(node: KafkaNode) -> int | None:
    """The pid of this node's broker if it is alive (guarding against a reused pid)."""
    try:
        pid = int(node.pid_file.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    if MAIN_CLASS.encode() not in arguments:
        return None
    if str(node.server_properties).encode() not in arguments:
        return None
    return pid


def running_pids(kafka: LocalKafka) -> dict[int, int | None]:
    """Each node's pid, or None for a node that does not run."""
    return {node.node_id: running_pid(node) for node in kafka.nodes}


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
    """Start every node that does not run yet; returns node 1's pid and whether any started now."""
    started = start_nodes(kafka, timeout_s=timeout_s)
    return started[1][0], any(now for _, now in started.values())


def start_nodes(
    kafka: LocalKafka, node_ids: Iterable[int] | None = None, timeout_s: float = 90.0
) -> dict[int, tuple[int, bool]]:
    """Start these nodes (all by default) unless they run already, in parallel, and wait until
    each serves; returns each node's (pid, started_now). A cluster's node becomes ready only
    once a majority of the controller quorum runs, so start a cluster's nodes together, or one
    node while the others run. Nodes started by a call that fails are stopped again."""
    nodes = kafka.nodes if node_ids is None else tuple(kafka.node(i) for i in node_ids)
    cluster_id = _claim_data_dir(kafka)
    results: dict[int, tuple[int, bool]] = {}
    pending = []
    for node in nodes:
        pid = running_pid(node)
        if pid is None:
            pending.append(node)
        else:
            results[node.node_id] = (pid, False)
    if not pending:
        return results
    for node in pending:
        for port, what in (
            (node.port, "OKR_LOCAL_KAFKA_PORT"),
            (node.controller_port, "OKR_LOCAL_KAFKA_CONTROLLER_PORT"),
        ):
            if _port_open(port):
                raise LocalKafkaError(
                    f"port {port} (node {node.node_id}) is taken by another process; "
                    f"stop it or set {what}"
                )
    java = require_java()
    classpath = resolve_classpath(kafka)

    def launch(node: KafkaNode) -> int:
        log4j = _write_config(kafka, node)
        _format_storage(java, classpath, node, cluster_id, log4j)
        command = _java_command(
            java, classpath, log4j, kafka.heap, MAIN_CLASS, str(node.server_properties)
        )
        attempts = BIND_ATTEMPTS
        while True:
            log_start = node.log_file.stat().st_size if node.log_file.exists() else 0
            process = _spawn(node, command)
            attempts -= 1
            try:
                _wait_until_ready(node, process, timeout_s)
            except LocalKafkaError as error:
                if not _lost_its_port(node, process, log_start):
                    raise
                if not attempts:
                    raise LocalKafkaError(
                        f"{error}: its port {node.port} or {node.controller_port} was in use "
                        f"{BIND_ATTEMPTS} times; {ephemeral_hint()}"
                    ) from None
                continue
            return process.pid

    outcomes = _in_parallel(launch, pending)
    failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
    if failures:
        stop_nodes(kafka, [node.node_id for node in pending])
        raise LocalKafkaError("\n".join(str(failure) for failure in failures))
    for node, outcome in zip(pending, outcomes, strict=True):
        assert isinstance(outcome, int)
        results[node.node_id] = (outcome, True)
    return dict(sorted(results.items()))


def _spawn(node: KafkaNode, command: list[str]) -> subprocess.Popen[bytes]:
    with (node.data_dir / "stdout.log").open("ab") as out:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=node.data_dir,
        )
    node.pid_file.write_text(str(process.pid))
    return process


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
    except (OSError, ValueError):
        return 32768, 60999
    return int(low), int(high)


def ephemeral_ports(kafka: LocalKafka) -> list[int]:
    """The nodes' ports that lie in the kernel's ephemeral range (docs/decisions/0002)."""
    low, high = ephemeral_range()
    ports = [port for node in kafka.nodes for port in (node.port, node.controller_port)]
    return [port for port in ports if low <= port <= high]


def ephemeral_hint() -> str:
    low, high = ephemeral_range()
    return (
        f"ports inside the kernel's ephemeral range ({low}-{high}) are also the source ports of "
        f"outgoing connections, which can hold one just when a node binds it: choose ports "
        f"below {low}"
    )


def _lost_its_port(node: KafkaNode, process: subprocess.Popen[bytes], log_start: int) -> bool:
    """Whether the node exited because its port was taken. A port inside the kernel's ephemeral
    range can be held for a moment as the source port of an outgoing connection (the other
    nodes' among them); trying again a moment later usually finds it free."""
    if process.poll() is None:
        return False
    with node.log_file.open("rb") as log:
        log.seek(log_start)
        lost = b"Address already in use" in log.read()
    if lost:
        time.sleep(1.0)
    return lost


def _in_parallel(work: Callable[[KafkaNode], T], nodes: list[KafkaNode]) -> list[T | BaseException]:
    """`work` on every node at once (a JVM start is mostly waiting); each result or its error."""
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        futures = [pool.submit(work, node) for node in nodes]
        return [future.exception() or future.result() for future in futures]


def _wait_until_ready(node: KafkaNode, process: subprocess.Popen[bytes], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            node.pid_file.unlink(missing_ok=True)
            raise LocalKafkaError(
                f"Kafka node {node.node_id} exited with code {process.returncode}; "
                f"see {node.log_file}"
            )
        if _port_open(node.port) and asyncio.run(_serves(node)):
            return
        time.sleep(0.3)
    raise LocalKafkaError(
        f"Kafka node {node.node_id} did not answer within {timeout_s:.0f}s; see {node.log_file}"
    )


async def _serves(node: KafkaNode) -> bool:
    """Whether the node answers a metadata request that lists it among the live brokers (a
    cluster's node is listed once the controller quorum registered and unfenced it)."""
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.errors import KafkaError

    admin = AIOKafkaAdminClient(
        bootstrap_servers=node.address, request_timeout_ms=2000, client_id="okr-local-kafka"
    )
    try:
        async with asyncio.timeout(3.0):
            await admin.start()
            cluster = await admin.describe_cluster()
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()
    return any(broker["node_id"] == node.node_id for broker in cluster["brokers"])


def stop(kafka: LocalKafka, timeout_s: float = 60.0) -> bool:
    """Stop every node cleanly; False if none ran."""
    return bool(stop_nodes(kafka, timeout_s=timeout_s))


QUORUMLESS_GRACE_S = 15.0
"""How long a node may take to stop once too few nodes run to make a controller quorum. Its
controller's resignation waits 5 s for voters that are gone; its broker, if the quorum went before
approving its controlled shutdown (nodes stopped together, one slower than the others), would
wait 5 minutes for an approval that cannot come."""


def stop_nodes(
    kafka: LocalKafka,
    node_ids: Iterable[int] | None = None,
    *,
    kill: bool = False,
    timeout_s: float = 60.0,
) -> dict[int, str]:
    """Stop these nodes (all by default) at once with SIGTERM, or SIGKILL with `kill` (a crash:
    no controlled shutdown). A node still there after `timeout_s`, or `QUORUMLESS_GRACE_S`
    after the cluster lost its quorum, gets SIGKILL. Returns how each node that ran ended:
    "stopped" or "killed"."""
    nodes = kafka.nodes if node_ids is None else tuple(kafka.node(i) for i in node_ids)
    running = {node: pid for node in nodes if (pid := running_pid(node)) is not None}
    for pid in running.values():
        os.kill(pid, signal.SIGKILL if kill else signal.SIGTERM)
    ended = dict.fromkeys((node.node_id for node in running), "killed" if kill else "stopped")
    deadline = time.monotonic() + timeout_s
    majority = kafka.brokers // 2 + 1
    quorum_gone_at: float | None = None
    while alive := [node for node, pid in running.items() if _alive(pid)]:
        now = time.monotonic()
        if quorum_gone_at is None and _running_count(kafka) < majority:
            quorum_gone_at = now
        if now > deadline or (quorum_gone_at and now - quorum_gone_at > QUORUMLESS_GRACE_S):
            for node in alive:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(running[node], signal.SIGKILL)
                ended[node.node_id] = "killed"
        time.sleep(0.2)
    for node in nodes:
        node.pid_file.unlink(missing_ok=True)
    return ended


def _running_count(kafka: LocalKafka) -> int:
    return sum(1 for pid in running_pids(kafka).values() if pid is not None and _alive(pid))


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
