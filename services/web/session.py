"""Dashboard sessions: an API key typed once on `/ui/login`, then a signed cookie.

The key is checked by the API's own machinery (`services.http.auth.principal_for`); the cookie
keeps the key's SHA-256 digest, never the key, signed (itsdangerous) with the time it was issued.
Every request looks the digest up in the live key set again, so revoking a key (`okr keys
revoke`) or changing its role takes effect on the next page, as it does for API calls. The
cookie is HttpOnly (no script reads it), SameSite=Strict (no other site's page sends it) and
expires after `SESSION_TTL_S`; it also carries a random CSRF token that every form echoes.
"""

from __future__ import annotations

import contextlib
import hmac
import logging
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, Request
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer

from services.access.keys import ApiKeys, hash_key
from services.access.principals import Permission, Principal
from services.http.auth import Credentials, principal_for

log = logging.getLogger(__name__)

COOKIE = "okr_session"
SESSION_TTL_S = 8 * 3600
"""A working day: then the key is asked for again."""
SALT = "okr-ledger.ui-session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SECRET_BYTES = 32


@dataclass(frozen=True)
class Session(Principal):
    """A signed-in person: the principal of their key (its name and role), their CSRF token and
    the key's digest."""

    csrf: str
    digest: str

    @classmethod
    def of(cls, principal: Principal, csrf: str, digest: str) -> Session:
        return cls(principal.name, principal.role, csrf, digest)


class LoginRequiredError(Exception):
    """No session, or one that expired, was forged, or whose key was revoked: sign in again."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class ForbiddenPageError(Exception):
    """A signed-in role without the permission a page or an action needs."""

    def __init__(self, session: Session, permission: Permission) -> None:
        self.session = session
        self.permission = permission
        super().__init__(f"{session.name} ({session.role}) may not {permission}")


class CsrfError(Exception):
    """A form without the session's CSRF token: sent by another site, or from a stale page."""


def session_secret(keys_file: Path) -> bytes:
    """The signing secret, kept beside the API keys file (mode 600) so sessions survive a
    restart and every instance sharing that file accepts them; a fresh random one per process
    when the file cannot be written (sessions then end with the process)."""
    path = keys_file.with_name("ui-session.secret")
    with contextlib.suppress(OSError, ValueError):
        existing = bytes.fromhex(path.read_text().strip())
        if len(existing) >= SECRET_BYTES:
            return existing
    secret = secrets.token_bytes(SECRET_BYTES)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as out:
            out.write(secret.hex() + "\n")
    except FileExistsError:  # another instance won the race: use its secret
        with contextlib.suppress(OSError, ValueError):
            return bytes.fromhex(path.read_text().strip())
    except OSError as error:
        log.warning("UI session secret not kept (%s): sessions end with this process", error)
    return secret


class Sessions:
    """Issues and reads session cookies against the live API keys."""

    def __init__(self, keys: ApiKeys, secret: bytes, ttl_s: int = SESSION_TTL_S) -> None:
        self.keys = keys
        self.ttl_s = ttl_s
        self._serializer = URLSafeTimedSerializer(secret, salt=SALT)

    def sign_in(self, api_key: str) -> tuple[Session, str]:
        """The session of a key and its cookie value; `UnauthenticatedError` for a wrong key."""
        principal = principal_for(self.keys, Credentials(bearer=api_key.strip(), api_key=None))
        session = Session.of(principal, secrets.token_urlsafe(24), hash_key(api_key.strip()))
        cookie = self._serializer.dumps({"d": session.digest, "c": session.csrf})
        return session, cookie

    def read(self, cookie: str | None) -> Session:
        if not cookie:
            raise LoginRequiredError("not signed in")
        try:
            data: Any = self._serializer.loads(cookie, max_age=self.ttl_s)
        except SignatureExpired:
            raise LoginRequiredError("the session expired: sign in again") from None
        except BadSignature:
            raise LoginRequiredError("the session is not valid: sign in again") from None
        if not isinstance(data, dict) or not {"d", "c"} <= data.keys():
            raise LoginRequiredError("the session is not valid: sign in again")
        principal = self._principal_of(str(data["d"]))
        if principal is None:
            raise LoginRequiredError("the key of this session was revoked: sign in again")
        return Session.of(principal, str(data["c"]), str(data["d"]))

    def _principal_of(self, digest: str) -> Principal | None:
        found = None
        for entry in self.keys.entries():
            if hmac.compare_digest(entry.sha256, digest):
                found = Principal(entry.principal, entry.role)
        return found


def get_sessions(request: Request) -> Sessions:
    sessions: Sessions = request.app.state.ui_sessions
    return sessions


def current_session(
    request: Request, sessions: Annotated[Sessions, Depends(get_sessions)]
) -> Session:
    return sessions.read(request.cookies.get(COOKIE))


def check_csrf(session: Session, token: str | None) -> None:
    if token is None or not hmac.compare_digest(token, session.csrf):
        raise CsrfError("the form's security token is missing or does not match")
