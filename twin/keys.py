"""API keys and roles: who holds a key, what the role may do, and where.

A key is made here once, shown once, and stored as its SHA-256 only. The key is 32 random
bytes, so a fast hash is safe (there is nothing to guess from it); a slow password hash
would cost every request tens of milliseconds for nothing. Each key has a role and may be
held to a jurisdiction (that one and everything inside it); unit staff are held to their
unit's work. Keys given in ``TWIN_API_KEYS`` are configuration, not rows: they are admin
keys with no scope (``Holder.configured``). No HTTP here: the API asks ``holder_of`` and
``Holder.may``; the CLI (``twin keys``) and the API's ``/keys`` manage them.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from twin.errors import Conflict, Forbidden, InvalidInput, NotFound
from twin.schema import KEY_ROLES

PREFIX = "twin_"  # so a key pasted in the wrong place is recognised for what it is
MAX_NAME = 100

# What each role may do: every route names one of these (api/access.py), and a test fails
# when a route names none. Public routes (the open map, tracking) need no key at all.
CAPABILITIES: dict[str, frozenset[str]] = {
    # Take a report into the one map: every key holder may, each in its channel.
    "report": frozenset(KEY_ROLES),
    # See incidents with their reporters, and act on them (the loop checks each action).
    "handle_incidents": frozenset(
        {"grid_inspector", "dispatcher", "unit_staff", "supervisor", "admin"}
    ),
    # Send an incident to a unit by hand, read the responsibility list.
    "dispatch": frozenset({"dispatcher", "supervisor", "admin"}),
    # Keep the categories and the responsibility list.
    "configure_incidents": frozenset({"supervisor", "admin"}),
    # Import and edit layers, scenes and datasets.
    "edit_layers": frozenset({"engineer", "admin"}),
    # Read the evaluation (一网评效) and public sentiment.
    "evaluate": frozenset({"dispatcher", "supervisor", "admin"}),
    # Ask the pipe networks: connectivity, traces, valve isolation, excavation checks.
    "query_networks": frozenset({"engineer", "dispatcher", "unit_staff", "supervisor", "admin"}),
    # Act on a pipe network: a burst turned into an incident, valve work orders, notices.
    "operate_networks": frozenset({"engineer", "dispatcher", "supervisor", "admin"}),
    # Make and revoke keys.
    "manage_keys": frozenset({"admin"}),
}
# Roles whose reports come from outside the centre: their answers are the public view.
OUTSIDE_ROLES = frozenset({"resident", "external"})
# The channels a role reports through (the others: any channel, e.g. the hotline's staff).
ROLE_CHANNELS: dict[str, tuple[str, ...]] = {
    "resident": ("resident_photo",),
    "grid_inspector": ("grid_inspector",),
    "external": ("external_system", "sensor_alarm", "camera_ai"),
}


@dataclass(frozen=True)
class Holder:
    """Who called: the key's name, role, and scope (None: everywhere / every unit)."""

    name: str
    role: str
    jurisdiction_code: str | None = None
    unit_code: str | None = None
    configured: bool = False  # a key of TWIN_API_KEYS

    def __str__(self) -> str:
        return self.name

    def may(self, capability: str) -> bool:
        """Whether the role has ``capability`` (one of ``CAPABILITIES``)."""
        return self.role in CAPABILITIES[capability]

    def sees(self, unit_code: str | None, jurisdiction_codes: Iterable[str]) -> bool:
        """Whether an incident given to ``unit_code`` in those jurisdictions is within this
        key's scope."""
        if self.role == "unit_staff" and unit_code != self.unit_code:
            return False
        return self.jurisdiction_code is None or self.jurisdiction_code in jurisdiction_codes

    @property
    def a_role(self) -> str:
        """The role with its article, for messages: "a unit staff", "an external"."""
        words = self.role.replace("_", " ")
        # "an admin", "an engineer", "an external"; but "a unit staff" (a "you" sound).
        return f"{'an' if words[0] in 'aei' else 'a'} {words}"

    @property
    def scope_words(self) -> str:
        """The scope in words, for messages."""
        parts = []
        if self.role == "unit_staff":
            parts.append(f"the work of unit {self.unit_code}")
        if self.jurisdiction_code is not None:
            parts.append(f"jurisdiction {self.jurisdiction_code}")
        return " in ".join(parts) or "everything"


def channel_for(holder: Holder, channel: Any) -> Any:
    """The channel of ``holder``'s report: the one given, or the role's own when none was
    given; Forbidden when the role does not report through the channel given."""
    own = ROLE_CHANNELS.get(holder.role)
    if own is None:
        return channel
    if channel is None:
        return own[0]
    if channel not in own:
        raise Forbidden(f"{holder.a_role} key reports through "
                        f"{' or '.join(own)}, not {str(channel)[:40]!r}")  # fmt: skip
    return channel


def digest(key: str) -> str:
    """The stored form of a key."""
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def _name(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput("a key needs a name (who holds it)", option="name")
    if "\x00" in value or len(value) > MAX_NAME:
        raise InvalidInput(f"a key's name is text of at most {MAX_NAME} characters without NUL",
                           option="name")  # fmt: skip
    return value.strip()


def _code(conn: psycopg.Connection, table: str, value: Any, option: str) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or "\x00" in value or len(value) > 100:
        raise InvalidInput(f"{option} is the code of a {option}, as text", option=option)
    query = ("SELECT 1 FROM jurisdictions WHERE code = %s" if table == "jurisdictions"
             else "SELECT 1 FROM units WHERE code = %s")  # fmt: skip
    if conn.execute(query, (value,)).fetchone() is None:
        raise InvalidInput(f"there is no {option} {value!r}", option=option)
    return value


def create(
    conn: psycopg.Connection,
    name: Any,
    role: Any,
    *,
    jurisdiction: Any = None,
    unit: Any = None,
) -> tuple[dict[str, Any], str]:
    """Make a key: its row as ``list_keys`` shows it, and the key itself (shown this once).

    InvalidInput naming what is wrong (``option``): no name, an unknown role, an unknown
    jurisdiction or unit, unit staff without a unit. Conflict when the name is taken."""
    name = _name(name)
    if not isinstance(role, str) or role not in KEY_ROLES:
        raise InvalidInput(f"role {str(role)[:40]!r} is not one of {', '.join(KEY_ROLES)}",
                           option="role")  # fmt: skip
    jurisdiction_code = _code(conn, "jurisdictions", jurisdiction, "jurisdiction")
    unit_code = _code(conn, "units", unit, "unit")
    if role == "unit_staff" and unit_code is None:
        raise InvalidInput("a unit staff key needs the unit whose work it sees", option="unit")
    if role != "unit_staff" and unit_code is not None:
        raise InvalidInput(f"only unit staff keys are held to a unit; a {role} key may be held "
                           "to a jurisdiction", option="unit")  # fmt: skip
    key = PREFIX + secrets.token_urlsafe(32)
    with conn.transaction():
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                """
            INSERT INTO api_keys (name, role, digest, shown, jurisdiction_code, unit_code)
            VALUES (%s, %s, %s, %s, %s, %s)
            ON CONFLICT (name) DO NOTHING
            RETURNING name, role, shown, jurisdiction_code AS jurisdiction, unit_code AS unit,
                      created_at, revoked_at
            """,
                (
                    name,
                    role,
                    digest(key),
                    key[: len(PREFIX) + 4] + "…",
                    jurisdiction_code,
                    unit_code,
                ),
            )
            .fetchone()
        )
    if row is None:
        raise Conflict(f"there is a key named {name!r} already; revoke it or choose another name")
    return row, key


def list_keys(conn: psycopg.Connection) -> list[dict[str, Any]]:
    """Every key ever made (revoked ones with the time), without the keys themselves."""
    return (
        conn.cursor(row_factory=dict_row)
        .execute(
            """
        SELECT name, role, shown, jurisdiction_code AS jurisdiction, unit_code AS unit,
               created_at, revoked_at
        FROM api_keys ORDER BY name
        """
        )
        .fetchall()
    )


def revoke(conn: psycopg.Connection, name: Any) -> dict[str, Any]:
    """Revoke the key named ``name`` from now on; NotFound for an unknown or revoked one."""
    name = _name(name)
    with conn.transaction():
        row = (
            conn.cursor(row_factory=dict_row)
            .execute(
                """
            UPDATE api_keys SET revoked_at = now() WHERE name = %s AND revoked_at IS NULL
            RETURNING name, role, shown, jurisdiction_code AS jurisdiction, unit_code AS unit,
                      created_at, revoked_at
            """,
                (name,),
            )
            .fetchone()
        )
    if row is None:
        raise NotFound(f"there is no key named {name!r} that is not revoked already")
    return row


def configured_holder(keys: Mapping[str, str], key: str) -> Holder | None:
    """The admin holder of a key given in ``TWIN_API_KEYS`` (key → name), or None."""
    for configured, name in keys.items():
        if secrets.compare_digest(configured.encode(), key.encode("utf-8", "surrogatepass")):
            return Holder(name, "admin", configured=True)
    return None


def holder_of(conn: psycopg.Connection, key: str) -> Holder | None:
    """The holder of a key made with ``create`` and not revoked, or None."""
    row = conn.execute(
        "SELECT name, role, jurisdiction_code, unit_code FROM api_keys"
        " WHERE digest = %s AND revoked_at IS NULL",
        (digest(key),),
    ).fetchone()
    return None if row is None else Holder(*row)
