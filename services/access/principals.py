"""Who may do what: roles, their permissions, the principal behind a request, and the refusals.

Shared by the HTTP API (API keys) and the Kafka command consumer (a principal header checked
against an allow-list), so both edges refuse in the same words through
`services.commands.rejections`.
Nothing here does I/O: the key store is `services.access.keys`, the HTTP dependency
`services.http.auth`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Literal

Permission = Literal["read", "write", "audit"]
"""read: every GET and /lint; write: every command; audit: the audit history, export, verify."""


class Role(StrEnum):
    ADMIN = "admin"
    EDITOR = "editor"
    READER = "reader"
    AUDITOR = "auditor"
    SERVICE = "service"


ROLE_PERMISSIONS: Mapping[Role, frozenset[Permission]] = {
    Role.ADMIN: frozenset({"read", "write", "audit"}),
    Role.EDITOR: frozenset({"read", "write"}),
    Role.SERVICE: frozenset({"read", "write"}),
    Role.READER: frozenset({"read"}),
    Role.AUDITOR: frozenset({"read", "audit"}),
}
"""The one table of what each role may do; an auditor reads and verifies but never writes."""

PRINCIPAL_NAME = re.compile(r"^[A-Za-z0-9_.@+\-]{1,200}$")
"""Principals become the `actor` of events (at most 200 characters there); no spaces, commas or
colons, so the inline forms `principal:role:sha256,...` and `a,b,c` need no quoting."""


def check_principal_name(name: str) -> str:
    if not PRINCIPAL_NAME.match(name):
        raise ValueError(
            f"principal {name!r} must be 1 to 200 letters, digits or . _ @ + - (no spaces)"
        )
    return name


@dataclass(frozen=True)
class Principal:
    """Who is calling, as established by an API key; its name is the actor of every write."""

    name: str
    role: Role

    def can(self, permission: Permission) -> bool:
        return permission in ROLE_PERMISSIONS[self.role]


class AccessError(Exception):
    """Base of the refusals of access control; `services.commands.rejections` maps each to status
    and code."""

    problem_field = "(request)"
    """Where the problem is, for the `field` of the rejection's issue."""


class UnauthenticatedError(AccessError):
    """No API key, or one that no configured key matches (HTTP 401)."""

    problem_field = "Authorization"


class PermissionDeniedError(AccessError):
    """A known principal whose role lacks the permission the endpoint needs (HTTP 403).

    Not a `PermissionError`: that builtin is an `OSError`, which the edges treat as an outage.
    """

    problem_field = "Authorization"

    def __init__(self, principal: Principal, permission: Permission) -> None:
        self.principal = principal
        self.permission = permission
        super().__init__(
            f"{principal.name} ({principal.role}) lacks the {permission!r} permission; "
            f"roles that have it: {', '.join(roles_with(permission))}"
        )


class UnknownPrincipalError(AccessError):
    """A Kafka command whose `principal` header is missing or not on the allow-list."""

    problem_field = "headers.principal"


class ImpersonationError(AccessError):
    """A Kafka command whose `actor` names someone other than the principal that sent it."""

    problem_field = "actor"


def roles_with(permission: Permission) -> list[str]:
    return [role.value for role, granted in ROLE_PERMISSIONS.items() if permission in granted]
