"""`GET /asyncapi.json`: the Kafka side of the API, as this deployment names its topics.

docs/asyncapi.json is the contract with logical topic names; this answer is the same document with
the deployment's topic prefix and brokers, so a client reads the names it must actually use.
"""

from __future__ import annotations

from functools import lru_cache

from fastapi import APIRouter, Response

from services.http.health import SettingsDep
from services.kafka.asyncapi import asyncapi_json

router = APIRouter(tags=["operations"])


@lru_cache(maxsize=8)
def _document(topic_prefix: str, bootstrap_servers: str) -> bytes:
    """Built once per deployment: it changes only with the code or these two settings."""
    return asyncapi_json(topic_prefix, bootstrap_servers).encode()


@router.get(
    "/asyncapi.json",
    summary="AsyncAPI 3.0 document of the Kafka channels, with this deployment's topic names",
    response_class=Response,
    responses={200: {"content": {"application/json": {}}}},
)
async def asyncapi_document(settings: SettingsDep) -> Response:
    body = _document(settings.topic_prefix, settings.kafka_bootstrap_servers)
    return Response(body, media_type="application/json")
