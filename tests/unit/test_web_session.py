"""Dashboard sessions: the API key checked by the API's machinery, a signed cookie that expires,
and a key revoked or re-roled takes effect on the next page."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from services.access.keys import ApiKeys, add_key, revoke_keys
from services.access.principals import Role, UnauthenticatedError
from services.web.session import (
    CsrfError,
    LoginRequiredError,
    Sessions,
    check_csrf,
    session_secret,
)


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    return tmp_path / "keys.json"


def test_a_valid_key_signs_in_a_wrong_one_does_not(keys_file: Path) -> None:
    issued = add_key(keys_file, "alice", Role.EDITOR)
    sessions = Sessions(ApiKeys(keys_file), b"s" * 32)
    session, cookie = sessions.sign_in(issued.key)
    assert (session.name, session.role) == ("alice", Role.EDITOR)
    assert issued.key not in cookie, "the cookie never carries the key"
    again = sessions.read(cookie)
    assert (again.name, again.role, again.csrf) == ("alice", Role.EDITOR, session.csrf)
    with pytest.raises(UnauthenticatedError):
        sessions.sign_in("okr_wrong")


def test_a_forged_or_foreign_cookie_is_refused(keys_file: Path) -> None:
    issued = add_key(keys_file, "alice", Role.EDITOR)
    _, cookie = Sessions(ApiKeys(keys_file), b"a" * 32).sign_in(issued.key)
    other = Sessions(ApiKeys(keys_file), b"b" * 32)
    with pytest.raises(LoginRequiredError):
        other.read(cookie)
    with pytest.raises(LoginRequiredError):
        other.read(cookie[:-2] + "xx")
    with pytest.raises(LoginRequiredError):
        other.read(None)


def test_a_session_expires(keys_file: Path) -> None:
    issued = add_key(keys_file, "alice", Role.EDITOR)
    sessions = Sessions(ApiKeys(keys_file), b"s" * 32, ttl_s=1)
    _, cookie = sessions.sign_in(issued.key)
    time.sleep(2.1)
    with pytest.raises(LoginRequiredError, match="expired"):
        sessions.read(cookie)


def test_revoking_the_key_ends_its_sessions(keys_file: Path) -> None:
    issued = add_key(keys_file, "alice", Role.EDITOR)
    sessions = Sessions(ApiKeys(keys_file), b"s" * 32)
    _, cookie = sessions.sign_in(issued.key)
    revoke_keys(keys_file, "alice")
    with pytest.raises(LoginRequiredError, match="revoked"):
        sessions.read(cookie)


def test_csrf_token_must_match(keys_file: Path) -> None:
    issued = add_key(keys_file, "alice", Role.EDITOR)
    session, _ = Sessions(ApiKeys(keys_file), b"s" * 32).sign_in(issued.key)
    check_csrf(session, session.csrf)
    for wrong in (None, "", session.csrf + "x"):
        with pytest.raises(CsrfError):
            check_csrf(session, wrong)


def test_the_secret_is_kept_beside_the_keys_file_private(keys_file: Path) -> None:
    first = session_secret(keys_file)
    assert session_secret(keys_file) == first, "sessions survive a restart"
    secret_file = keys_file.with_name("ui-session.secret")
    assert os.stat(secret_file).st_mode & 0o777 == 0o600
    assert len(first) >= 32
