"""The `okr` command: run the service, manage the local Kafka broker, create topics."""

from __future__ import annotations

import asyncio
import logging
import sys

import typer

from services import local_kafka
from services.settings import Settings, SettingsError, load_settings

app = typer.Typer(
    help="OKR Ledger: event-sourced objectives and key results.", no_args_is_help=True
)
kafka_app = typer.Typer(help="A local Apache Kafka broker (KRaft) for machines without Docker.")
app.add_typer(kafka_app, name="kafka")


def settings_or_exit() -> Settings:
    """Invalid configuration stops the process at once with the variables named."""
    try:
        return load_settings()
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def _local_kafka() -> local_kafka.LocalKafka:
    return local_kafka.LocalKafka.from_settings(settings_or_exit())


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


@kafka_app.command("start")
def kafka_start() -> None:
    """Start the broker (resolving its jars on first use); does nothing if it already runs."""
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
    kafka = _local_kafka()
    stopped = local_kafka.stop(kafka)
    typer.echo("kafka stopped" if stopped else "kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Exit 0 and print the pid when the broker runs, exit 3 otherwise."""
    kafka = _local_kafka()
    pid = local_kafka.running_pid(kafka)
    if pid is None:
        typer.echo("kafka is not running")
        raise typer.Exit(3)
    typer.echo(f"kafka running: pid {pid}, bootstrap {kafka.bootstrap_servers}")


@app.command("topics")
def topics() -> None:
    """Create the service's topics that are missing (the service also does this at start)."""
    from services.kafka_admin import ensure_topics

    settings = settings_or_exit()
    try:
        created = asyncio.run(ensure_topics(settings))
    except Exception as error:
        raise _fail(error) from None
    typer.echo(f"created: {', '.join(created)}" if created else "all topics exist")


@app.command("serve")
def serve() -> None:
    """Run the service: HTTP API, the okr.commands consumer and the okr.events relay."""
    import uvicorn

    from services.bootstrap import build_service

    settings = settings_or_exit()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    uvicorn.run(build_service(settings), host=settings.http_host, port=settings.http_port)


if __name__ == "__main__":
    app()
