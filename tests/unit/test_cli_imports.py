"""`okr --help` (and every `okr` command's start) imports only what the command line needs: the
web framework, the Kafka client, the event sourcing library, the database driver and the models
are imported by the commands that use them, so the help answers at once.

What is imported is checked, in a fresh interpreter, not how long it takes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from services.audit.export import ExportFormat
from services.cli.audit import ExportChoice

HEAVY = (
    "fastapi",
    "uvicorn",
    "faststream",
    "aiokafka",
    "eventsourcing",
    "psycopg",
    "pydantic",
    "pydantic_settings",
)

IMPORTED_AFTER = """
import json, sys
{code}
print(json.dumps(sorted({{name.split(".")[0] for name in sys.modules}} & set({heavy!r}))))
"""


def heavy_imported_after(code: str, heavy: tuple[str, ...] = HEAVY) -> list[str]:
    found = subprocess.run(
        [sys.executable, "-c", IMPORTED_AFTER.format(code=code, heavy=heavy)],
        capture_output=True,
        text=True,
        check=True,
    )
    imported = json.loads(found.stdout)
    assert isinstance(imported, list)
    return imported


@pytest.mark.parametrize("module", ["services.cli.main", "services.cli.audit", "services.cli.keys"])
def test_the_command_line_imports_no_heavy_library_at_start(module: str) -> None:
    assert heavy_imported_after(f"import {module}") == []


def test_the_help_of_every_group_is_answered_without_them() -> None:
    helps = [
        ["--help"],
        ["audit", "--help"],
        ["audit", "history", "--help"],
        ["audit", "export", "--help"],
        ["audit", "verify", "--help"],
        ["keys", "add", "--help"],
        ["kafka", "--help"],
        ["serve", "--help"],
    ]
    code = (
        "from typer.testing import CliRunner\n"
        "from services.cli.main import app\n"
        f"for args in {helps!r}:\n"
        "    result = CliRunner().invoke(app, args)\n"
        "    assert result.exit_code == 0, (args, result.output)\n"
    )
    # typer itself imports pydantic to read a command's parameters (typer._adapters).
    assert heavy_imported_after(code, tuple(set(HEAVY) - {"pydantic"})) == []


def test_the_export_formats_offered_are_the_exporters() -> None:
    """Named twice so that the command line need not import the exporter to offer them."""
    assert [choice.value for choice in ExportChoice] == [f.value for f in ExportFormat]
