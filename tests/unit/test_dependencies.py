"""The dependency direction stays one-way, and each part of `services/` imports only what it says.

`events/` is the contract other teams vendor (pydantic only); `domain/` is pure (no I/O, no
Kafka, no SQL), so both must stay free of our adapters and of the infrastructure libraries. The
domain's stored events are declared by the contract's payload models (ADR 19), so `domain/` may
import `events/`, never the reverse.
Each sub-package of `services/` says in its docstring what it owns and, on a `May import:` line,
which of our packages it may import; this test holds the code to those words, so a new edge
between capabilities is a decision someone writes down, not an accident. Kafka consumers that
join a group are made by the one consumer, and FastStream only describes (ADR 26).
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ROOT / "services"
OUR_PACKAGES = {"domain", "events", "services", "projections"}
INFRASTRUCTURE = {"aiokafka", "faststream", "psycopg", "sqlite3", "fastapi", "eventsourcing"}

ALLOWED = {
    "domain": {"domain", "events"},
    "events": {"events"},
}

TOP_LEVEL_MODULES: dict[str, set[str]] = {
    "services.settings": {"services.access", "services.stores"},
    "services.stores": {"projections"},
    "services.tasks": set(),
    "services.projector_service": {
        "events",
        "projections",
        "services.kafka",
        "services.scoring",
        "services.settings",
        "services.stores",
    },
    "services.bootstrap": {"*"},
}
"""The modules directly in `services/` (shared by every part, or composing them)."""


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


def test_events_import_nothing_but_pydantic_and_the_standard_library() -> None:
    """Other teams vendor `events/`: it must not pull in anything else they would have to."""
    allowed = {"events", "pydantic", "pydantic_core", "__future__"} | sys.stdlib_module_names
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_top_levels(path) - allowed)
        for path in sorted((ROOT / "events").rglob("*.py"))
        if imported_top_levels(path) - allowed
    }
    assert offenders == {}


# --- Kafka clients (docs/decisions/0026-one-kafka-consumer.md) ------------------------------------

FASTSTREAM_USERS = {"services/kafka/asyncapi.py", "services/settings.py"}
"""FastStream describes the channels (AsyncAPI) and parses the security settings; nothing of
ours consumes or publishes through it."""
THE_CONSUMER = "services/kafka/consumer.py"


def production_modules() -> list[Path]:
    return sorted(path for package in OUR_PACKAGES for path in (ROOT / package).rglob("*.py"))


def test_faststream_only_describes_and_parses_security() -> None:
    users = {
        str(path.relative_to(ROOT))
        for path in production_modules()
        if "faststream" in imported_top_levels(path)
    }
    assert users <= FASTSTREAM_USERS


def test_every_group_member_is_made_by_the_one_kafka_consumer() -> None:
    """An `AIOKafkaConsumer` that joins a group (a `group_id` other than None) is made in one
    place; the readers of no group (topic scans, the health probe) are made where they read."""
    offenders = []
    for path in production_modules():
        where = str(path.relative_to(ROOT))
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)):
                continue
            if node.func.id != "AIOKafkaConsumer" or where == THE_CONSUMER:
                continue
            group = [k.value for k in node.keywords if k.arg == "group_id"]
            if not (group and isinstance(group[0], ast.Constant) and group[0].value is None):
                offenders.append(f"{where}:{node.lineno}")
    assert offenders == []


# --- the parts of services/ -----------------------------------------------------------------------


def part_of(module: str) -> str:
    """`services.scoring.scorer` -> `services.scoring`; `domain.objective` -> `domain`."""
    parts = module.split(".")
    if parts[0] != "services" or len(parts) == 1:
        return parts[0]
    return f"services.{parts[1]}"


def our_imports(path: Path) -> set[str]:
    """The parts of ours a module imports (`from services import web` names `services.web`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        modules: list[str] = []
        if isinstance(node, ast.Import):
            modules = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "services":
                modules = [f"services.{alias.name}" for alias in node.names]
            else:
                modules = [node.module]
        found |= {part_of(m) for m in modules if m.split(".")[0] in OUR_PACKAGES}
    return found


def declared(package: Path) -> set[str]:
    """The parts named on the `May import:` line(s) of a sub-package's docstring."""
    docstring = ast.get_docstring(ast.parse((package / "__init__.py").read_text())) or ""
    match = re.search(r"May import:(.*?)(?:\n\n|\Z)", docstring, re.S)
    assert match, f"{package.name}/__init__.py says what it may import ('May import: ...')"
    if "anything" in match.group(1):
        return {"*"}
    return {
        part_of(name)
        for name in re.findall(r"\b(?:services\.\w+|domain|events|projections)\b", match.group(1))
    }


SUB_PACKAGES = sorted(path.parent for path in SERVICES.glob("*/__init__.py"))


def test_every_part_of_services_is_a_sub_package_or_a_shared_module() -> None:
    loose = {f"services.{path.stem}" for path in SERVICES.glob("*.py") if path.stem != "__init__"}
    assert loose == set(TOP_LEVEL_MODULES)


@pytest.mark.parametrize("package", SUB_PACKAGES, ids=lambda path: path.name)
def test_each_part_imports_only_what_its_docstring_allows(package: Path) -> None:
    me = f"services.{package.name}"
    allowed = declared(package) | {me}
    if "*" in allowed:
        return
    offenders = {
        str(path.relative_to(ROOT)): sorted(our_imports(path) - allowed)
        for path in sorted(package.rglob("*.py"))
        if our_imports(path) - allowed
    }
    assert offenders == {}


@pytest.mark.parametrize("module", sorted(TOP_LEVEL_MODULES))
def test_each_shared_module_imports_only_what_it_may(module: str) -> None:
    allowed = TOP_LEVEL_MODULES[module] | {module}
    if "*" in allowed:
        return
    path = ROOT / (module.replace(".", "/") + ".py")
    assert our_imports(path) - allowed == set()


# --- no cycles between the parts ------------------------------------------------------------------

ALLOWED_CYCLES: dict[frozenset[str], str] = {
    frozenset({"services.commands", "services.relay", "services.scoring"}): (
        "the event store's recorder rings the relay's doorbell and writes the KPI series in the "
        "same transaction as the events (it imports `relay.wakeup` and `scoring.series_store`); "
        "the relay and the scorer only name the application they are handed, in type hints"
    ),
    frozenset({"services.http", "services.web"}): (
        "the JSON API's app mounts the dashboard, and the dashboard's pages reuse the API's "
        "read handlers and guards; the app factory would have to move to bootstrap first"
    ),
}
"""Cycles that stay, each with the reason. Any other cycle is a new one: move the shared piece to
the part that owns it (a type both need into the lower layer) rather than list it here."""


def part_graph(declared_edges: bool) -> dict[str, set[str]]:
    """Part -> the parts of `services/` it imports (really, or by its `May import:` line)."""
    graph: dict[str, set[str]] = {}
    for package in SUB_PACKAGES:
        me = f"services.{package.name}"
        if declared_edges:
            edges = declared(package)
        else:
            edges = set().union(*(our_imports(path) for path in package.rglob("*.py")))
        graph[me] = edges
    for module in TOP_LEVEL_MODULES:
        if declared_edges:
            graph[module] = set(TOP_LEVEL_MODULES[module])
        else:
            graph[module] = our_imports(ROOT / (module.replace(".", "/") + ".py"))
    return {
        part: {other for other in edges if other in graph and other != part}
        for part, edges in graph.items()
        if "*" not in edges  # entry points: nothing of ours imports them back
    }


def cycles(graph: dict[str, set[str]]) -> set[frozenset[str]]:
    """The strongly connected parts of more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: set[frozenset[str]] = set()

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.add(frozenset(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


@pytest.mark.parametrize("declared_edges", [False, True], ids=["imports", "may-import-lines"])
def test_the_parts_form_no_cycle_but_the_listed_ones(declared_edges: bool) -> None:
    found = cycles(part_graph(declared_edges))
    assert {
        cycle for cycle in found if not any(cycle <= allowed for allowed in ALLOWED_CYCLES)
    } == set()


def test_the_cycle_finder_finds_a_cycle() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == {frozenset("abc")}
