"""API keys: parsing the file and the inline setting (every mistake named), hashing, lookup."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from services.access.keys import (
    KEY_PREFIX,
    ApiKeys,
    ApiKeysError,
    add_key,
    find_principal,
    generate_key,
    hash_key,
    parse_inline_keys,
    parse_keys_file,
)
from services.access.principals import Principal, Role
from services.devtools.demo import DemoError, demo_api_key
from services.http.app import create_app
from services.settings import Settings, SettingsError, load_settings

DIGEST = hash_key("okr_some-key")


def entry(**changes: object) -> dict[str, object]:
    return {"principal": "ci", "role": "service", "sha256": DIGEST, **changes}


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("{not json", "not JSON"),
        (json.dumps({"principal": "ci"}), "expected a JSON list"),
        (json.dumps([entry(role="superuser")]), "entry 0.role"),
        (json.dumps([entry(sha256="abc")]), "entry 0.sha256"),
        (json.dumps([entry(sha256=DIGEST.upper())]), "entry 0.sha256"),
        (json.dumps([entry(), {"role": "admin", "sha256": DIGEST}]), "entry 1.principal"),
        (json.dumps([entry(principal="two words")]), "entry 0.principal"),
        (json.dumps([entry(password="hunter2")]), "entry 0.password"),
        (json.dumps([entry(), entry(principal="other")]), "same key is given to 'ci' and 'other'"),
    ],
    ids=[
        "not-json",
        "not-a-list",
        "unknown-role",
        "short-hash",
        "upper-case-hash",
        "no-principal",
        "bad-principal",
        "unknown-field",
        "one-key-two-principals",
    ],
)
def test_a_malformed_keys_file_is_refused_naming_the_file_and_the_entry(
    tmp_path: Path, content: str, complaint: str
) -> None:
    path = tmp_path / "keys.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ApiKeysError) as raised:
        parse_keys_file(path)
    assert str(path) in str(raised.value)
    assert complaint in str(raised.value)


def test_the_app_does_not_start_on_a_malformed_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry(role="root")]), encoding="utf-8")
    with pytest.raises(ApiKeysError, match=r"entry 0\.role"):
        create_app(settings_with(tmp_path, api_keys_file=path))


def test_okr_serve_exits_naming_the_malformed_keys_file(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text("[{", encoding="utf-8")
    env = {name: value for name, value in os.environ.items() if not name.startswith("OKR_")}
    env |= {
        "OKR_API_KEYS_FILE": str(path),
        "OKR_EVENT_STORE_URL": f"sqlite:///{tmp_path / 'events.sqlite'}",
        "OKR_READ_STORE_URL": f"sqlite:///{tmp_path / 'read.sqlite'}",
    }
    result = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "serve"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2
    assert f"API keys file {path}: not JSON" in result.stderr


def test_a_missing_keys_file_has_no_keys(tmp_path: Path) -> None:
    assert parse_keys_file(tmp_path / "absent.json") == []


@pytest.mark.parametrize(
    ("inline", "complaint"),
    [
        ("ci:service", "not principal:role:sha256hex"),
        (f"ci:root:{DIGEST}", "role"),
        ("ci:service:nothex", "sha256"),
        (f"ci:service:{DIGEST},other:admin:{DIGEST}", "same key"),
    ],
)
def test_malformed_inline_keys_stop_the_settings_naming_the_variable(
    inline: str, complaint: str
) -> None:
    with pytest.raises(ApiKeysError, match=complaint):
        parse_inline_keys(inline)
    with pytest.raises(SettingsError) as raised:
        load_settings(api_keys=inline)
    assert "OKR_API_KEYS" in str(raised.value)


def test_inline_keys_parse_with_spaces_and_a_trailing_comma() -> None:
    parsed = parse_inline_keys(f" ci:service:{DIGEST} , ")
    assert [(e.principal, e.role, e.sha256) for e in parsed] == [("ci", Role.SERVICE, DIGEST)]


def test_kafka_command_principals_are_checked_at_start() -> None:
    with pytest.raises(SettingsError, match="OKR_KAFKA_COMMAND_PRINCIPALS"):
        load_settings(kafka_command_principals="billing, sales service")


def test_a_key_is_found_by_its_hash_only() -> None:
    key = generate_key()
    assert key.startswith(KEY_PREFIX) and len(key) > 40 and key != generate_key()
    entries = parse_inline_keys(f"ci:service:{hash_key(key)}")
    assert find_principal(entries, key) == Principal("ci", Role.SERVICE)
    assert find_principal(entries, key + "x") is None
    assert find_principal(entries, "") is None
    assert find_principal(entries, hash_key(key)) is None, "the stored hash is not a key"


def test_added_keys_are_stored_hashed_mode_600_and_replace_on_request(tmp_path: Path) -> None:
    path = tmp_path / "nested" / "keys.json"
    first = add_key(path, "okr-demo", Role.EDITOR)
    other = add_key(path, "ada", Role.ADMIN)
    again = add_key(path, "okr-demo", Role.EDITOR, replace_principal=True)
    stored = parse_keys_file(path)
    assert [(e.principal, e.sha256) for e in stored] == [
        ("ada", hash_key(other.key)),
        ("okr-demo", hash_key(again.key)),
    ]
    text = path.read_text()
    assert all(issued.key not in text for issued in (first, other, again))
    assert path.stat().st_mode & 0o777 == 0o600
    keys = ApiKeys(path)
    assert keys.principal_for(first.key) is None
    assert keys.principal_for(again.key) == Principal("okr-demo", Role.EDITOR)


def settings_with(tmp_path: Path, **changes: object) -> Settings:
    return Settings(
        event_store_url=f"sqlite:///{tmp_path / 'events.sqlite'}",
        read_store_url=f"sqlite:///{tmp_path / 'read.sqlite'}",
        api_keys_file=tmp_path / "api-keys.json",
    ).model_copy(update=changes)


def test_the_demo_uses_the_key_given_else_makes_its_own_for_a_local_service(
    tmp_path: Path,
) -> None:
    settings = settings_with(tmp_path)
    said: list[str] = []
    assert demo_api_key(settings, "http://127.0.0.1:8000", "okr_given", said.append) == "okr_given"
    configured = settings.model_copy(update={"demo_api_key": SecretStr("okr_configured")})
    assert demo_api_key(configured, "http://[::1]:8000", None, said.append) == "okr_configured"
    assert said == [] and not settings.api_keys_file.exists()

    own = demo_api_key(settings, "http://localhost:8000", None, said.append)
    again = demo_api_key(settings, "http://127.0.0.1:8000", None, said.append)
    keys = ApiKeys(settings.api_keys_file)
    assert keys.principal_for(own) is None, "each run replaces the demo's previous key"
    assert keys.principal_for(again) == Principal("okr-demo", Role.EDITOR)
    assert len(said) == 2 and "okr-demo" in said[0]

    with pytest.raises(DemoError, match="--api-key"):
        demo_api_key(settings, "https://okr.example.com", None, said.append)


def test_one_key_for_two_principals_across_file_and_inline_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "keys.json"
    path.write_text(json.dumps([entry(principal="bob")]))
    inline = parse_inline_keys(f"alice:editor:{DIGEST}")

    with pytest.raises(ApiKeysError, match="same key"):
        ApiKeys(path, inline)

    path.write_text("[]")
    keys = ApiKeys(path, inline)
    path.write_text(json.dumps([entry(principal="bob", role="admin")]))
    os.utime(path, ns=(1, 1))  # a changed signature, whatever the clock's resolution
    assert keys.principal_for("okr_some-key") == Principal("alice", Role.EDITOR)
