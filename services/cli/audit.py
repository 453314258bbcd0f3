"""`okr audit`: the auditor's commands, reading the event store (OKR_EVENT_STORE_URL).

`history` prints an objective's decisions and its state and scores at a version or a moment;
`export` streams every event of a time window as JSON Lines or CSV. Text shown in a terminal is
JSON-quoted with control characters escaped, so a title cannot move the cursor or recolour the
screen, and quotes show where a value starts and ends.

`okr` imports this module at every start (it registers the `audit` group), so the event store,
Kafka and the models are imported by the commands that use them, not here: `okr --help` stays
fast (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
import unicodedata
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from uuid import UUID

import typer

if TYPE_CHECKING:
    from services.audit.history import AuditDecision, AuditHistory
    from services.audit.past_state_view import KeyResultAsOfBody
    from services.audit.tampering import SinceCheckpointReport
    from services.commands.application import OkrApplication

audit_app = typer.Typer(
    help="For auditors: decision history and exports, read from the event store.",
    no_args_is_help=True,
)


class HistoryFormat(StrEnum):
    TABLE = "table"
    JSON = "json"


class ExportChoice(StrEnum):
    """`--format` of `export`: the values of `services.audit.export.ExportFormat`, named here so
    that building the command does not import the exporter (a unit test holds them equal)."""

    JSONL = "jsonl"
    CSV = "csv"


def _version_in_range(version: int | None) -> int | None:
    from events.commands import MAX_VERSION

    if version is not None and version > MAX_VERSION:
        raise typer.BadParameter(f"{version} is above the largest version, {MAX_VERSION}")
    return version


# --- commands -------------------------------------------------------------------------------------


@audit_app.command("history")
def history(
    objective: str = typer.Argument(..., help="The objective's id."),
    as_of: str | None = typer.Option(
        None, "--as-of", help="A moment, ISO 8601 with a time zone, e.g. 2026-08-01T12:00:00Z."
    ),
    version: int | None = typer.Option(
        None, "--version", min=1, callback=_version_in_range, help="A version (1, 2, …)."
    ),
    output_format: HistoryFormat = typer.Option(HistoryFormat.TABLE, "--format"),
) -> None:
    """Every decision (who, when, why, before -> after) and the state and scores then.

    Now, at --version N, or at --as-of TIME; answered from the event store.
    """
    from services.audit.history import read_audit_history
    from services.commands.rejections import REJECTABLE

    objective_id = _uuid(objective)
    moment = aware_datetime(as_of, "--as-of") if as_of is not None else None
    if moment is not None and version is not None:
        raise typer.BadParameter("give at most one of --as-of and --version")
    with _application() as application:
        try:
            found = read_audit_history(application, objective_id, as_of=moment, version=version)
        except REJECTABLE as error:
            raise _refused(error) from None
    if output_format is HistoryFormat.JSON:
        typer.echo(found.model_dump_json(indent=2))
    else:
        typer.echo(history_table(found), nl=False)


@audit_app.command("export")
def export(
    since: str | None = typer.Option(
        None, "--since", help="From this moment, included (ISO 8601 with a time zone)."
    ),
    until: str | None = typer.Option(None, "--until", help="To this moment, excluded."),
    export_format: ExportChoice = typer.Option(ExportChoice.JSONL, "--format"),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Write to this file instead of stdout."
    ),
) -> None:
    """Every stored event with since <= time < until, in store order, as JSON Lines or CSV.

    All objectives; open bounds when left out. CSV is spreadsheet-safe (services/audit/export.py).
    """
    from services.audit import export as audit_export

    start = aware_datetime(since, "--since") if since is not None else None
    end = aware_datetime(until, "--until") if until is not None else None
    if start is not None and end is not None and start >= end:
        raise typer.BadParameter("--since must be before --until")
    with _application() as application, _sink(output) as sink:
        pages = audit_export.exported_pages(application, since=start, until=end)
        chosen = audit_export.ExportFormat(export_format.value)
        for chunk in audit_export.rendered(pages, chosen):
            sink.write(chunk)
    if output is not None:
        typer.echo(f"wrote {output}", err=True)


@audit_app.command("verify")
def verify(
    topic: bool = typer.Option(
        True, "--topic/--no-topic", help="Also check every okr.events message against the store."
    ),
    output_format: HistoryFormat = typer.Option(HistoryFormat.TABLE, "--format"),
    since_checkpoint: Path | None = typer.Option(
        None,
        "--since-checkpoint",
        help="A signed checkpoint you kept: prove nothing it covered changed since.",
    ),
    keys: list[str] = typer.Option(
        [], "--key", help="Verifier key of the checkpoint (default: this deployment's keys)."
    ),
) -> None:
    """Check every objective's hash chain and snapshots, and okr.events against the store.

    With --since-checkpoint, also recompute the transparency log from the stored events and
    prove it consistent with that checkpoint, naming any event edited, deleted or moved, even
    when the chain hashes and the topic were rewritten to match.
    Exit code 0 when intact, 1 naming each broken objective and version, 3 when the check
    could not run (Kafka unreachable, topic missing).
    """
    import asyncio

    from aiokafka.errors import KafkaError

    from services.audit.verify import verify as verify_all
    from services.cli.main import settings_or_exit

    settings = settings_or_exit()
    since = None
    with _application() as application:
        try:
            report = asyncio.run(verify_all(settings, application, check_topic=topic))
        except (KafkaError, OSError) as error:
            typer.echo(f"error: could not check okr.events: {error}", err=True)
            raise typer.Exit(3) from None
        if since_checkpoint is not None:
            since = _since_checkpoint(application, since_checkpoint.read_text(), keys)
    if output_format is HistoryFormat.JSON:
        document = report.model_dump(mode="json")
        if since is not None:
            document["since_checkpoint"] = {
                "intact": since.intact,
                "summary": since.summary(),
                "findings": [str(finding) for finding in since.findings],
            }
        typer.echo(json.dumps(document, indent=2))
    else:
        for found in report.breaks:
            typer.echo(shown_break(str(found)))
        typer.echo(report.summary())
        if since is not None:
            for finding in since.findings:
                typer.echo(shown_break(f"transparency log: {finding}"))
            typer.echo(f"since checkpoint: {since.summary()}")
    if not report.intact or (since is not None and not since.intact):
        raise typer.Exit(1)


def _since_checkpoint(
    application: OkrApplication, note: str, keys: list[str]
) -> SinceCheckpointReport:
    from services.audit.checkpoints import verifiers_for
    from services.audit.tampering import verify_since_checkpoint
    from services.transparency.tlog_check import CheckError, VerifierKey

    try:
        verifiers = [VerifierKey.parse(key) for key in keys] or verifiers_for(application.settings)
    except CheckError as error:
        raise typer.BadParameter(f"--key: {error}") from None
    return verify_since_checkpoint(application, note, verifiers)


def shown_break(text: str) -> str:
    """A break's line, with control characters a forged message may carry made visible."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


# --- the table ------------------------------------------------------------------------------------


def history_table(found: AuditHistory) -> str:
    """The history for a terminal: the state first (what an auditor asked about), then every
    decision with its changes, oldest first."""
    state = found.state
    lines = [
        f"Objective {state.objective_id}  {shown(state.title)}",
        f"  version {state.version} ({state.as_of.isoformat()})  status {state.status.value}"
        f"  score {_number(state.score)}"
        + (f"  final score {_number(state.final_score)}" if state.final_score is not None else ""),
        f"  owner {shown(state.owner)}  team {shown(state.team)}"
        f"  period {state.period_start} .. {state.period_end}"
        f"  parent {state.parent_id or '-'}",
    ]
    if found.requested_as_of is not None:
        lines.append(f"  as of {found.requested_as_of.isoformat()} (asked)")
    if found.requested_version is not None:
        lines.append(f"  at version {found.requested_version} (asked)")
    lines += ["", f"Key results at version {state.version}"]
    lines += _key_result_lines(state.key_results)
    integrity = found.integrity
    verdict = "intact" if integrity.intact else f"BROKEN ({len(integrity.breaks)})"
    lines += [
        "",
        f"Hash chain: {verdict}, {integrity.events_checked} stored events checked,"
        f" head {integrity.head_hash or '-'}",
        *(f"  {shown_break(problem)}" for problem in integrity.breaks),
    ]
    lines += ["", f"Decisions ({len(found.decisions)})"]
    for decision in found.decisions:
        lines += _decision_lines(decision)
    return "\n".join(lines) + "\n"


KEY_RESULT_HEADER = ("KEY RESULT", "KIND", "CURRENT", "TARGET", "SCORE", "ATTAINED", "TITLE")


def _key_result_lines(key_results: list[KeyResultAsOfBody]) -> list[str]:
    rows = [KEY_RESULT_HEADER] + [
        (
            str(kr.key_result_id),
            kr.kind.value,
            _number(kr.current),
            _target(kr),
            _number(kr.score),
            "-" if kr.attainment is None else f"{_number(kr.attainment)} %",
            shown(kr.title) + (f"  kpi {shown(kr.kpi_key)}" if kr.kpi_key else ""),
        )
        for kr in key_results
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(len(KEY_RESULT_HEADER) - 1)]
    return [
        "  "
        + "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=False))
        + "  "
        + row[-1]
        for row in rows
    ]


def _target(kr: KeyResultAsOfBody) -> str:
    if kr.target_low is not None or kr.target_high is not None:
        return f"{_number(kr.target_low)}..{_number(kr.target_high)}"
    return _number(kr.target)


def _decision_lines(decision: AuditDecision) -> list[str]:
    lines = [
        f"  v{decision.version}  {decision.occurred_at.isoformat()}  {decision.event_type}"
        f"  by {shown(decision.actor)}  command {shown(decision.command_id)}"
        f"  score {_number(decision.objective_score)}"
    ]
    if decision.reason is not None:
        lines.append(f"      reason: {shown(decision.reason)}")
    lines += [
        f"      {change.field}: {shown(change.before)} -> {shown(change.after)}"
        for change in decision.changes
    ]
    if decision.chain_hash is not None:
        lines.append(f"      chain {decision.chain_hash}")
    return lines


def shown(value: Any) -> str:
    """A value as JSON (strings quoted, null for none), with every control or format character
    escaped: text from the store never reaches the terminal as a control sequence."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return "".join(
        f"\\u{ord(char):04x}" if unicodedata.category(char) in ("Cc", "Cf") else char
        for char in text
    )


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}".rstrip("0").rstrip(".")


# --- parsing and plumbing -------------------------------------------------------------------------


def aware_datetime(text: str, option: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO 8601 time, e.g. 2026-08-01T12:00:00Z", param_hint=option
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise typer.BadParameter(
            f"{text!r} has no time zone: add one, e.g. Z or +02:00", param_hint=option
        )
    return moment


def _uuid(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise typer.BadParameter(f"{text!r} is not an objective id (a UUID)") from None


def _refused(error: Exception) -> typer.Exit:
    """The same code and message HTTP would answer (`services.commands.rejections`); exit 1."""
    from services.commands.rejections import reject

    rejection = reject(error)
    typer.echo(f"error: {rejection.error}: {rejection.message}", err=True)
    return typer.Exit(1)


@contextlib.contextmanager
def _application() -> Iterator[OkrApplication]:
    from services.cli.main import settings_or_exit  # here: services.cli.main registers this group
    from services.commands.application import OkrApplication

    application = OkrApplication(settings_or_exit())
    try:
        yield application
    finally:
        application.close()


class Writer(Protocol):
    def write(self, text: str, /) -> int: ...


@contextlib.contextmanager
def _sink(output: Path | None) -> Iterator[Writer]:
    if output is None:
        yield _Echo()
        return
    # Written beside the target and renamed at the end: a failed export leaves no partial file
    # that could be mistaken for a complete one.
    descriptor, temporary = tempfile.mkstemp(dir=output.parent, prefix=f".{output.name}.")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8", newline="") as file:
            yield file
        os.replace(temporary, output)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


class _Echo:
    """Stdout through typer.echo, so test runners and pipes get exactly the bytes written."""

    def write(self, text: str) -> int:
        typer.echo(text, nl=False)
        return len(text)
