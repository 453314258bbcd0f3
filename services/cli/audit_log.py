"""`okr audit` commands of the transparency log: checkpoints, keys, proofs and their offline check.

An operator runs `checkpoint`, `public-key` and `rotate-key`; anyone with read access to the
event store runs `prove` and `consistency`; an auditor runs `check` on their own machine, with the
files those print and the verifier key, and nothing else (`services.transparency.tlog_check`,
which this command only calls). Imports stay inside the commands, as for every `okr` group.
"""

from __future__ import annotations

from pathlib import Path

import typer

from services.cli.audit import _application, _uuid, audit_app


def _write(text: str, output: Path | None) -> None:
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)


def _proof_failed(error: Exception) -> typer.Exit:
    typer.echo(f"error: {error}", err=True)
    return typer.Exit(1)


@audit_app.command("checkpoint")
def checkpoint(
    output: Path | None = typer.Option(None, "--output", "-o", help="Write it to this file."),
) -> None:
    """Sign a checkpoint of the log now (or print the newest, if it covers every event).

    Keep it: later, `okr audit consistency FILE` proves nothing it covered was changed since.
    """
    from services.audit.checkpoints import make_checkpoint, signer_for
    from services.cli.main import settings_or_exit

    settings = settings_or_exit()
    with _application() as application:
        kept = make_checkpoint(
            application.receipts.log, signer_for(settings), settings.audit_log_origin
        )
    _write(kept.note, output)


@audit_app.command("public-key")
def public_key() -> None:
    """The verifier key of the checkpoints' signatures (C2SP signed-note: name+id+base64),
    then every retired one still valid for older checkpoints, one per line."""
    from services.audit.checkpoints import verifiers_for
    from services.cli.main import settings_or_exit

    for verifier in verifiers_for(settings_or_exit()):
        typer.echo(str(verifier))


@audit_app.command("rotate-key")
def rotate_key() -> None:
    """A new signing key for new checkpoints; the old verifier key is kept (`public-key` lists
    it), so checkpoints signed before still check."""
    from services.audit.checkpoints import key_name
    from services.cli.main import settings_or_exit
    from services.transparency.signing import rotate_signing_key

    settings = settings_or_exit()
    if settings.audit_signing_key is not None:
        typer.echo("error: the key comes from OKR_AUDIT_SIGNING_KEY; rotate it there", err=True)
        raise typer.Exit(1)
    signer, old = rotate_signing_key(settings.audit_signing_key_file, key_name(settings))
    typer.echo(f"new key: {signer.verifier}")
    typer.echo(f"retired: {old}")


@audit_app.command("prove")
def prove(
    objective: str = typer.Argument(..., help="The objective's id."),
    version: int = typer.Argument(..., min=1, help="The version of the event."),
    checkpoint_file: Path | None = typer.Option(
        None, "--checkpoint", help="Prove against this kept checkpoint (default: a new one)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write it to this file."),
) -> None:
    """An inclusion proof: leaf index, the event's canonical bytes and the audit path, with the
    signed checkpoint it is proven against, as JSON for `okr audit check inclusion`."""
    from services.audit.proofs import ProofUnavailableError, checkpoint_size, inclusion_proof

    objective_id = _uuid(objective)
    with _application() as application:
        try:
            size = checkpoint_size(checkpoint_file.read_text()) if checkpoint_file else None
            proof = inclusion_proof(application, objective_id, version, tree_size=size)
        except ProofUnavailableError as error:
            raise _proof_failed(error) from None
    _write(proof.to_json() + "\n", output)


@audit_app.command("consistency")
def consistency(
    old_checkpoint: Path = typer.Argument(..., help="An older checkpoint you kept."),
    new_checkpoint: Path | None = typer.Argument(
        None, help="A newer kept checkpoint (default: the log now, signed now)."
    ),
    output: Path | None = typer.Option(None, "--output", "-o", help="Write it to this file."),
) -> None:
    """A consistency proof that the newer tree extends the older one, as JSON for
    `okr audit check consistency`."""
    from services.audit.proofs import ProofUnavailableError, checkpoint_size, consistency_proof

    with _application() as application:
        try:
            new_size = checkpoint_size(new_checkpoint.read_text()) if new_checkpoint else None
            proof = consistency_proof(application, old_checkpoint.read_text(), new_size)
        except ProofUnavailableError as error:
            raise _proof_failed(error) from None
    _write(proof.to_json() + "\n", output)


@audit_app.command(
    "check",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True},
)
def check(ctx: typer.Context) -> None:
    """Offline: a checkpoint's signature, an inclusion or a consistency proof, from files alone.

    Arguments: `checkpoint FILE`, `inclusion PROOF_FILE` or `consistency PROOF_FILE`, each with
    `--key VERIFIER_KEY` (repeatable) or `--key-file FILE`. No store, no Kafka: the same as
    `python tlog_check.py ...` with services/transparency/tlog_check.py copied anywhere.
    """
    from services.transparency.tlog_check import main

    raise typer.Exit(main(list(ctx.args)))
