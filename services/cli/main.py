"""The `okr` command: run the service, manage the local Kafka broker, create topics.

Every `okr` start imports this module and the groups it registers (`services.cli.audit`,
`services.cli.keys`), so they import only typer and the standard library at the top: settings,
the event store, Kafka, the web server, the models and asyncio are imported inside the commands
that use them, and `okr --help` answers without loading them (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

import typer

from services.cli import audit_log  # noqa: F401  (registers its commands on `okr audit`)
from services.cli.audit import audit_app
from services.cli.keys import keys_app
from services.operations.logging_setup import configure_logging

if TYPE_CHECKING:
    from services.devtools import local_kafka
    from services.settings import Settings

app = typer.Typer(
    help="OKR Ledger: event-sourced objectives and key results.", no_args_is_help=True
)
kafka_app = typer.Typer(help="A local Apache Kafka broker (KRaft) for machines without Docker.")
app.add_typer(kafka_app, name="kafka")
projections_app = typer.Typer(help="The read models built from okr.events.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")


def settings_or_exit() -> Settings:
    """Invalid configuration stops the process at once with the variables named."""
    from services.settings import SettingsError, load_settings

    try:
        return load_settings()
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def _local_kafka() -> local_kafka.LocalKafka:
    from services.devtools import local_kafka

    return local_kafka.LocalKafka.from_settings(settings_or_exit())


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


@kafka_app.command("start")
def kafka_start() -> None:
    """Start the broker (resolving its jars on first use); does nothing if it already runs."""
    from services.devtools import local_kafka

    kafka = _local_kafka()
    try:
        pid, started = local_kafka.start(kafka)
    except local_kafka.LocalKafkaError as error:
        raise _fail(error) from None
    verb = "started" if started else "already running"
    typer.echo(f"kafka {verb}: pid {pid}, bootstrap {kafka.bootstrap_servers}")


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the broker cleanly; does nothing if none runs."""
    from services.devtools import local_kafka

    kafka = _local_kafka()
    stopped = local_kafka.stop(kafka)
    typer.echo("kafka stopped" if stopped else "kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Exit 0 and print the pid when the broker runs, exit 3 otherwise."""
    from services.devtools import local_kafka

    kafka = _local_kafka()
    pid = local_kafka.running_pid(kafka)
    if pid is None:
        typer.echo("kafka is not running")
        raise typer.Exit(3)
    typer.echo(f"kafka running: pid {pid}, bootstrap {kafka.bootstrap_servers}")


@app.command("topics")
def topics() -> None:
    """Create the service's topics that are missing (the service also does this at start)."""
    import asyncio

    from services.kafka.admin import ensure_topics

    settings = settings_or_exit()
    try:
        created = asyncio.run(ensure_topics(settings))
    except Exception as error:
        raise _fail(error) from None
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@projections_app.command("rebuild")
def projections_rebuild(
    force: bool = typer.Option(False, help="Rebuild even while projectors are running."),
) -> None:
    """Drop the read models and replay okr.events from offset 0 into the configured read store."""
    import asyncio

    from services.projector_service import open_read_store, rebuild_read_store, running_projectors

    settings = settings_or_exit()
    try:
        running = asyncio.run(running_projectors(settings))
    except Exception as error:
        raise _fail(error) from None
    if running and not force:
        typer.echo(f"refusing: {running} projector(s) running; stop them or pass --force", err=True)
        raise typer.Exit(1)
    store = open_read_store(settings)
    try:
        report = asyncio.run(rebuild_read_store(settings, store))
    except Exception as error:
        raise _fail(error) from None
    finally:
        store.close()
    events = report.events
    typer.echo(
        f"replayed {events.messages} messages: {events.applied} applied, "
        f"{events.duplicates} duplicates, {events.gaps} gaps, {events.invalid} invalid"
    )
    for table, count in report.counts.items():
        typer.echo(f"{table}: {count}")


@app.command("migrate")
def migrate(
    status: bool = typer.Option(
        False, "--status", help="Only show each store's migrations, applied or pending."
    ),
) -> None:
    """Bring both stores' schemas up to this release (every process also does it at start).

    With --status, change nothing: list each migration with when it was applied, or `pending`.
    """
    from services.operations.schema_status import store_schemas

    settings = settings_or_exit()
    if not status:
        from services.commands.application import OkrApplication
        from services.projector_service import open_read_store

        OkrApplication(settings).close()
        open_read_store(settings).close()
    for schema in store_schemas(settings.event_store_url, settings.read_store_url):
        typer.echo(f"{schema.store} ({len(schema.pending)} pending)")
        for state in schema.migrations:
            when = state.applied_at or "pending"
            typer.echo(f"  {state.version:>3}  {when:<32}  {state.name}")


@app.command("asyncapi")
def asyncapi(
    output: str | None = typer.Option(
        None, "--output", "-o", help="Write to this file (docs/asyncapi.json) instead of stdout."
    ),
) -> None:
    """Print the AsyncAPI document of the Kafka channels: the contract, with logical topic names."""
    from pathlib import Path

    from services.kafka.asyncapi import asyncapi_json

    document = asyncapi_json()
    if output is None:
        typer.echo(document, nl=False)
        return
    Path(output).write_text(document, encoding="utf-8")
    typer.echo(f"wrote {output}")


@app.command("serve")
def serve() -> None:
    """Run the service: HTTP API, okr.commands consumer, okr.events relay and KPI scorer."""
    import uvicorn

    from services.access.keys import ApiKeysError
    from services.bootstrap import build_service

    settings = settings_or_exit()
    configure_logging()
    try:
        service = build_service(settings)
    except ApiKeysError as error:
        typer.echo(f"invalid configuration: {error}", err=True)
        raise typer.Exit(2) from None
    uvicorn.run(service, host=settings.http_host, port=settings.http_port)


@app.command("scorer")
def scorer(
    metrics_port: int | None = typer.Option(
        None,
        min=0,
        max=65535,
        help="Serve GET /metrics (jobs, okr_stage_* timings; no key asked) on this port.",
    ),
    metrics_host: str | None = typer.Option(
        None, help="Address to serve the metrics on (default: OKR_HTTP_HOST)."
    ),
) -> None:
    """Run only the KPI scorer: kpi.events in, bound key results moved (no HTTP API)."""
    import asyncio

    from projections.job_health import current_board
    from services.bootstrap import run_jobs, scorer_jobs
    from services.operations.job_metrics import serve_job_metrics

    settings = settings_or_exit()
    configure_logging()
    if metrics_port is not None:
        host = metrics_host or settings.http_host
        try:
            server = serve_job_metrics(current_board(), host, metrics_port)
        except OSError as error:
            raise _fail(error) from None
        typer.echo(f"metrics on http://{host}:{server.server_port}/metrics", err=True)
    asyncio.run(_until_terminated(run_jobs(settings, scorer_jobs(settings))))


@app.command("demo")
def demo(
    seconds: float = typer.Option(60.0, min=1, help="How long to publish KPI events."),
    events_per_second: float = typer.Option(
        3.0, min=0.1, max=100, help="KPI events per second, per KPI."
    ),
    url: str | None = typer.Option(
        None, help="The running service's HTTP API (default: OKR_HTTP_HOST:OKR_HTTP_PORT)."
    ),
    wait_for_service: float = typer.Option(
        30.0, min=0, help="Seconds to wait for the service to be healthy before giving up."
    ),
    api_key: str | None = typer.Option(
        None,
        help="An editor (or admin) API key of the service (default: OKR_DEMO_API_KEY; else the "
        "demo adds an okr-demo key to the local keys file).",
    ),
) -> None:
    """Play the seed's scenario against a running `okr serve`: objectives over this quarter,
    bound to KPIs, then live KPI events on kpi.events; prints the scores as they move."""
    import asyncio

    from services.devtools.demo import DemoError, run_demo

    settings = settings_or_exit()
    try:
        asyncio.run(
            run_demo(
                settings,
                seconds=seconds,
                events_per_second=events_per_second,
                base_url=url,
                wait_for_service_s=wait_for_service,
                api_key=api_key,
                echo=typer.echo,
            )
        )
    except DemoError as error:
        raise _fail(error) from None
    except KeyboardInterrupt:
        typer.echo("demo stopped", err=True)
        raise typer.Exit(130) from None


async def _until_terminated(main: Coroutine[Any, Any, None]) -> None:
    """SIGTERM stops the process like Ctrl-C does: cancelled, cleaned up, exit 0."""
    import asyncio

    task = asyncio.ensure_future(main)
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    with contextlib.suppress(asyncio.CancelledError):
        await task


if __name__ == "__main__":
    app()
