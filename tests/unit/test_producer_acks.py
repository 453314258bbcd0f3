"""Every Kafka producer of the service waits for all in-sync replicas and is idempotent.

With `min.insync.replicas=2` on a 3-broker cluster, acks=all is what makes an acknowledged write
survive the loss of a broker (docs/decisions/0021-local-kafka-cluster.md lists the producers).
"""

from __future__ import annotations

import ast
from pathlib import Path

SERVICES = Path(__file__).resolve().parents[2] / "services"
PRODUCERS = {"AIOKafkaProducer", "KafkaBroker"}
DESCRIBES_ONLY = {"kafka/asyncapi.py"}
"""The AsyncAPI document's broker is never connected: it publishes nothing."""


def producer_calls() -> list[tuple[str, ast.Call]]:
    calls = []
    for path in sorted(SERVICES.rglob("*.py")):
        where = path.relative_to(SERVICES).as_posix()
        if where in DESCRIBES_ONLY:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id in PRODUCERS:
                calls.append((f"{where}:{node.lineno}", node))
    return calls


def keyword(call: ast.Call, name: str) -> object:
    for given in call.keywords:
        if given.arg == name and isinstance(given.value, ast.Constant):
            return given.value.value
    return None


def test_every_producer_waits_for_all_in_sync_replicas_and_is_idempotent() -> None:
    calls = producer_calls()
    assert {where.split(":")[0] for where, _ in calls} >= {"kafka/consumer.py", "devtools/demo.py"}
    relay = (SERVICES / "relay" / "publisher.py").read_text()
    assert "acknowledged_producer(" in relay, "the relay publishes with the consumers' producer"
    for where, call in calls:
        assert keyword(call, "acks") == "all", f"{where} does not pass acks='all'"
        assert keyword(call, "enable_idempotence") is True, f"{where} is not idempotent"
