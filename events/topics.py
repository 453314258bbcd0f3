"""Logical topic names: the contract other services code against.

A deployment may prefix them (`OKR_TOPIC_PREFIX`); `Settings.topic` turns a logical name into the
concrete one.
"""

from __future__ import annotations

from typing import Final

COMMANDS: Final = "okr.commands"
COMMAND_RESULTS: Final = "okr.command-results"
EVENTS: Final = "okr.events"
KPI_EVENTS: Final = "kpi.events"
DEAD_LETTERS: Final = "okr.dlq"
AUDIT_CHECKPOINTS: Final = "okr.audit-checkpoints"

ALL_TOPICS: Final = (
    COMMANDS,
    COMMAND_RESULTS,
    EVENTS,
    KPI_EVENTS,
    DEAD_LETTERS,
    AUDIT_CHECKPOINTS,
)

RETAINED_FOREVER: Final = frozenset({EVENTS, AUDIT_CHECKPOINTS})
"""`okr.events` is replayed from offset 0 to rebuild projections, and signed checkpoints are the
auditors' evidence: neither expires."""
