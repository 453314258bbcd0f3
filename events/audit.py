"""What `okr.audit-checkpoints` carries: signed checkpoints of the transparency log.

Each message's value is one checkpoint as UTF-8 text, the key is the log's origin and a
`tree_size` header repeats the size. The text is a C2SP tlog-checkpoint (origin line, tree size,
base64 RFC 6962 root hash) wrapped as a C2SP signed-note (a blank line, then one line per
signature: an em dash, the key name, base64 of the 4-byte key id and the Ed25519 signature).
Standard verifiers read it, e.g. Go's golang.org/x/mod/sumdb/note; docs/decisions/0020 gives the
byte layout.
"""

from __future__ import annotations

from pydantic import Field, RootModel


class SignedCheckpoint(RootModel[str]):
    """A C2SP signed note whose text is a C2SP tlog-checkpoint."""

    root: str = Field(
        description="origin, tree size and base64 root, one per line; a blank line; then "
        "'— <key name> <base64(key id || signature)>' per signature",
        examples=[
            "okr-ledger.local/events\n12\nhWC0hbG7GS9Zikd3/sKyq3vwhN9w4BQGKxyXycrdyx8=\n\n"
            "— okr-ledger.local/events Ab3dEf…\n"
        ],
    )
