"""Headers every answer carries, whatever produced it (endpoint, refusal or middleware)."""

from __future__ import annotations

from starlette.types import Message, Receive, Scope, Send

from services.http.middleware import HttpMiddleware

SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"x-content-type-options", b"nosniff"),)
"""A browser must never guess HTML from an answer that echoes user text: JSON stays JSON."""


class SecurityHeadersMiddleware(HttpMiddleware):
    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", ()), *SECURITY_HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)
