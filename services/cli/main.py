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
kafka_app = typer.Typer(
    help="A local Apache Kafka broker, or a 3-node cluster (KRaft), for machines without Docker."
)
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


def _local_kafka(brokers: int | None = None) -> local_kafka.LocalKafka:
    from services.devtools import local_kafka

    try:
        return local_kafka.LocalKafka.from_settings(settings_or_exit(), brokers)
    except local_kafka.LocalKafkaError as error:
        raise _fail(error) from None


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


def _node_line(node: local_kafka.KafkaNode, state: str) -> str:
    return f"node {node.node_id} {state}: {node.address} (controller {node.controller_port})"


NODE_HELP = "Only this node of a cluster (1 to N)."


@kafka_app.command("start")
def kafka_start(
    brokers: int | None = typer.Option(
        None,
        min=1,
        help="Nodes: 1, or 3 for a replicated cluster on ports P, P+1, P+2 (default: as many "
        "as the data dir holds, else 1).",
    ),
    node: int | None = typer.Option(None, min=1, help=NODE_HELP),
) -> None:
    """Start the broker, or every node of a cluster (resolving the jars on first use).

    A node that runs already is left as it is; the bootstrap list is printed."""
    from services.devtools import local_kafka

    kafka = _local_kafka(brokers)
    risky = local_kafka.ephemeral_ports(kafka)
    if risky:
        typer.echo(
            f"warning: {', '.join(map(str, risky))}: {local_kafka.ephemeral_hint()}", err=True
        )
    try:
        started = local_kafka.start_nodes(kafka, None if node is None else [node])
    except local_kafka.LocalKafkaError as error:
        raise _fail(error) from None
    verb = "started" if any(now for _, now in started.values()) else "already running"
    if kafka.brokers == 1:
        typer.echo(f"kafka {verb}: pid {started[1][0]}, bootstrap {kafka.bootstrap_servers}")
        return
    for node_id, (pid, now) in started.items():
        state = f"{'started' if now else 'already running'}, pid {pid}"
        typer.echo(_node_line(kafka.node(node_id), state))
    typer.echo(f"kafka {verb}: {kafka.brokers} nodes, bootstrap {kafka.bootstrap_servers}")


@kafka_app.command("stop")
def kafka_stop(
    node: int | None = typer.Option(None, min=1, help=NODE_HELP),
    kill: bool = typer.Option(
        False, "--kill", help="SIGKILL at once, as a crash would (no controlled shutdown)."
    ),
) -> None:
    """Stop the broker, or every node of a cluster, cleanly; does nothing if none runs."""
    from services.devtools import local_kafka

    kafka = _local_kafka()
    try:
        ended = local_kafka.stop_nodes(kafka, None if node is None else [node], kill=kill)
    except local_kafka.LocalKafkaError as error:
        raise _fail(error) from None
    what = "kafka" if node is None else f"node {node}"
    if not ended:
        typer.echo(f"{what} was not running")
    elif kill:
        typer.echo(f"{what} killed")
    else:
        forced = [str(node_id) for node_id, how in ended.items() if how == "killed"]
        late = f"; killed node {', '.join(forced)}, which did not stop in time" if forced else ""
        typer.echo(f"{what} stopped{late}")


@kafka_app.command("status")
def kafka_status() -> None:
    """Print each node's pid and the bootstrap list.

    Exit 0 when every node runs, 3 when none does, 4 when only some of a cluster's do."""
    from services.devtools import local_kafka

    kafka = _local_kafka()
    pids = local_kafka.running_pids(kafka)
    running = [pid for pid in pids.values() if pid is not None]
    if kafka.brokers == 1:
        if not running:
            typer.echo("kafka is not running")
            raise typer.Exit(3)
        typer.echo(f"kafka running: pid {running[0]}, bootstrap {kafka.bootstrap_servers}")
        return
    for node_id, pid in pids.items():
        state = "not running" if pid is None else f"running, pid {pid}"
        typer.echo(_node_line(kafka.node(node_id), state))
    state = {0: "is not running", kafka.brokers: "running"}.get(len(running), "partly running")
    typer.echo(
        f"kafka {state}: {len(running)} of {kafka.brokers} nodes, "
        f"bootstrap {kafka.bootstrap_servers}"
    )
    if len(running) < kafka.brokers:
        raise typer.Exit(4 if running else 3)


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
