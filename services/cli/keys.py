"""`okr keys add | list | revoke`: manage the API keys file a running service re-reads on change.

`add` prints the new key alone on stdout (and what it did on stderr), so a script can keep it:
`okr keys add --principal ci --role service > ci.key`. Only its SHA-256 is stored; the key is
never shown again.

Registered by `okr` at every start: the keys file's models and the settings are imported by the
commands, not here (tests/unit/test_cli_imports.py).
"""

from __future__ import annotations

from pathlib import Path

import typer

from services.access.principals import Role, check_principal_name

keys_app = typer.Typer(
    help="API keys of the HTTP API (roles: admin, editor, reader, auditor, service).",
    no_args_is_help=True,
)

FILE_HELP = "The keys file (default: OKR_API_KEYS_FILE, var/api-keys.json)."


def _keys_file(file: Path | None) -> Path:
    if file is not None:
        return file
    from services.settings import SettingsError, load_settings

    try:
        return load_settings().api_keys_file
    except SettingsError as error:
        typer.echo(str(error), err=True)
        raise typer.Exit(2) from None


def _principal(name: str) -> str:
    try:
        return check_principal_name(name)
    except ValueError as error:
        raise typer.BadParameter(str(error)) from None


def _fail(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


@keys_app.command("add")
def add(
    principal: str = typer.Option(
        ..., callback=_principal, help="Who the key authenticates: the actor of its writes."
    ),
    role: Role = typer.Option(..., help="What it may do."),
    file: Path | None = typer.Option(None, help=FILE_HELP),
) -> None:
    """Create a random key for PRINCIPAL, store its hash (mode 600) and print the key once."""
    from services.access.keys import ApiKeysError, add_key

    path = _keys_file(file)
    try:
        issued = add_key(path, principal, role)
    except (ApiKeysError, OSError) as error:
        raise _fail(error) from None
    typer.echo(
        f"added a key for {principal} (role {role}) to {path}; it is shown once, keep it now:",
        err=True,
    )
    typer.echo(issued.key)


@keys_app.command("list")
def list_keys(file: Path | None = typer.Option(None, help=FILE_HELP)) -> None:
    """The file's keys: principal, role, the start of the hash, when created (never the key)."""
    from services.access.keys import ApiKeysError, parse_keys_file

    path = _keys_file(file)
    try:
        entries = parse_keys_file(path)
    except ApiKeysError as error:
        raise _fail(error) from None
    if not entries:
        typer.echo(f"no keys in {path}")
    for entry in entries:
        created = entry.created_at.isoformat(timespec="seconds") if entry.created_at else "-"
        typer.echo(f"{entry.principal}\t{entry.role}\tsha256:{entry.sha256[:12]}…\t{created}")


@keys_app.command("revoke")
def revoke(
    principal: str = typer.Option(..., callback=_principal, help="Whose keys to remove."),
    file: Path | None = typer.Option(None, help=FILE_HELP),
) -> None:
    """Remove every key of PRINCIPAL; a running service stops accepting them at once."""
    from services.access.keys import ApiKeysError, revoke_keys

    path = _keys_file(file)
    try:
        removed = revoke_keys(path, principal)
    except (ApiKeysError, OSError) as error:
        raise _fail(error) from None
    if not removed:
        typer.echo(f"no key of {principal} in {path}", err=True)
        raise typer.Exit(1)
    typer.echo(f"removed {removed} key(s) of {principal} from {path}")
