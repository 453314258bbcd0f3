"""API keys and Kafka principals for the tests: one key per role, configured by the `settings`
fixture (tests/conftest.py) through the inline `api_keys` setting.

    client.get("/objectives", headers=auth_headers("reader"))
    produce(settings, topics.COMMANDS, [(key, value, principal_headers())])
"""

from __future__ import annotations

import hashlib

from services.access.keys import hash_key
from services.access.principals import Role

ROLES: tuple[str, ...] = tuple(role.value for role in Role)

PRINCIPALS: dict[str, str] = {
    "admin": "ada@example.com",
    "editor": "alice@example.com",
    "reader": "rita@example.com",
    "auditor": "audrey@example.com",
    "service": "sales-service",
}
"""Role -> the principal its key authenticates: the actor recorded on that key's writes."""

API_KEYS: dict[str, str] = {
    role: "okr_test_" + hashlib.sha256(f"okr-ledger test key {role}".encode()).hexdigest()[:40]
    for role in ROLES
}
"""Role -> plaintext key. Fixed, so a failing request can be replayed by hand."""

INLINE_API_KEYS = ",".join(
    f"{PRINCIPALS[role]}:{role}:{hash_key(API_KEYS[role])}" for role in ROLES
)
"""The `api_keys` setting (OKR_API_KEYS) that makes every key above valid."""

KAFKA_PRINCIPAL = PRINCIPALS["service"]
"""The one principal the `settings` fixture allows to send commands on okr.commands."""


def auth_headers(role: str) -> dict[str, str]:
    """What a client with the key of `role` sends."""
    return {"Authorization": f"Bearer {API_KEYS[role]}"}


def principal_headers(principal: str = KAFKA_PRINCIPAL) -> list[tuple[str, bytes]]:
    """The Kafka headers of a command sent by `principal`."""
    return [("principal", principal.encode())]
