"""The dependency direction stays one-way, and each part of `services/` imports only what it says.

`events/` is the contract other teams vendor (pydantic only); `domain/` is pure (no I/O, no
Kafka, no SQL), so both must stay free of our adapters and of the infrastructure libraries. The
domain's stored events are declared by the contract's payload models (ADR 19), so `domain/` may
import `events/`, never the reverse.
Each sub-package of `services/` says in its docstring what it owns and, on a `May import:` line,
which of our packages it may import; this test holds the code to those words, so a new edge
between capabilities is a decision someone writes down, not an accident.
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
