"""The dependency direction stays one-way: domain and events import nothing of the services.

`events/` is the contract other teams vendor (pydantic only); `domain/` is pure (no I/O, no
Kafka, no SQL), so both must stay free of our adapters and of the infrastructure libraries.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
OUR_PACKAGES = {"domain", "events", "services", "projections"}
INFRASTRUCTURE = {"aiokafka", "faststream", "psycopg", "sqlite3", "fastapi", "eventsourcing"}

ALLOWED = {
    "domain": {"domain"},
    "events": {"events"},
}


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_package_imports_only_what_it_may(package: str) -> None:
    offenders = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        imported = imported_top_levels(path)
        forbidden = (imported & OUR_PACKAGES) - ALLOWED[package]
        forbidden |= imported & INFRASTRUCTURE
        if forbidden:
            offenders[str(path.relative_to(ROOT))] = sorted(forbidden)
    assert offenders == {}
