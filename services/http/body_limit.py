"""Refuse request bodies over `Settings.max_body_bytes` with 413, before any endpoint reads them.

A pure ASGI middleware, because it must see the body as it streams in: a declared
`Content-Length` over the limit is refused without reading a byte, and a body sent without one
(chunked) is read only up to the limit and refused at the first chunk that crosses it, so a
client cannot make the service hold more than the limit (plus that one chunk) for a request.

The body is read here, up to the limit, before the endpoint runs, and then replayed to it in one
message (the endpoints parse JSON, so they hold the whole body anyway). Refusing in the middle of
the endpoint's own read would surface as FastAPI's generic 400 ("error parsing the body") or as
a half-written answer, never as a clean 413.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from events.commands import Issue
from services.commands.rejections import Rejection
from services.http.errors import rejection_response
from services.http.middleware import HttpMiddleware


def body_too_large(max_body_bytes: int) -> Rejection:
    message = f"the request body is larger than the limit of {max_body_bytes} bytes"
    problem = Issue(code="body_too_large", field="(body)", message=message)
    return Rejection(413, "body_too_large", message, [problem])


def declared_length(scope: Scope) -> int | None:
    """The `Content-Length` the client declared; None when absent or not a number (the server
    refuses a malformed one; the streamed count below still holds the line)."""
    for name, value in scope.get("headers", ()):
        if name.lower() == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() else None
    return None


class BodyLimitMiddleware(HttpMiddleware):
    """413 for any HTTP request whose body is over `max_body_bytes`; others pass unchanged."""

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        super().__init__(app)
        self.max_body_bytes = max_body_bytes

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        declared = declared_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self.refuse(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # the client left: there is nobody to answer
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                await self.refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            """The whole body once, as one message; then whatever the server says next."""
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The rest of the body is left unread; the connection closes rather than drain it."""
        response = rejection_response(body_too_large(self.max_body_bytes))
        response.headers["Connection"] = "close"
        await response(scope, receive, send)
