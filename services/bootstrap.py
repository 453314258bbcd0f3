"""The composition root: what one `okr serve` process runs, built from one `Settings`."""

from __future__ import annotations

from functools import partial

from fastapi import FastAPI

from services.api.app import BackgroundJob, create_app
from services.command_consumer import run_command_consumer
from services.relay import run_relay
from services.settings import Settings


def service_jobs(settings: Settings) -> list[BackgroundJob]:
    """Kafka commands in, stored events out: both share the process's one application."""
    return [partial(run_command_consumer, settings), partial(run_relay, settings)]


def build_service(settings: Settings) -> FastAPI:
    return create_app(settings, background=service_jobs(settings))
