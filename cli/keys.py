"""``twin keys``: make, list and revoke API keys (stored hashed, each with a role and a
scope)."""

from __future__ import annotations

import argparse

from rich.table import Table

from cli.common import as_json, out, prepare
from twin import db, keys
from twin.settings import Settings


def cmd_keys_add(settings: Settings, args: argparse.Namespace) -> int:
    """Make a key and print it, this once."""
    with db.connect(prepare(settings)) as conn:
        row, key = keys.create(conn, args.name, args.role, jurisdiction=args.jurisdiction,
                               unit=args.unit)  # fmt: skip
    if args.json:
        out.print_json(as_json({**row, "key": key}))
        return 0
    scope = " in ".join(
        part for part in (row["unit"] and f"unit {row['unit']}",
                          row["jurisdiction"] and f"jurisdiction {row['jurisdiction']}") if part
    ) or "everywhere"  # fmt: skip
    out.print(f"key {row['name']!r} ({row['role']}, {scope}):", highlight=False)
    out.print(key, highlight=False, soft_wrap=True)
    out.print("it is shown this once: only its hash is kept. Send it as the X-API-Key header.",
              highlight=False)  # fmt: skip
    return 0


def cmd_keys_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print every key made (never the keys themselves)."""
    with db.connect(prepare(settings)) as conn:
        found = keys.list_keys(conn)
    if args.json:
        out.print_json(as_json(found))
        return 0
    table = Table("name", "role", "jurisdiction", "unit", "key", "made", "revoked")
    for row in found:
        table.add_row(row["name"], row["role"], row["jurisdiction"] or "", row["unit"] or "",
                      row["shown"], f"{row['created_at']:%Y-%m-%d %H:%M}",
                      f"{row['revoked_at']:%Y-%m-%d %H:%M}" if row["revoked_at"] else "")  # fmt: skip
    out.print(table)
    return 0


def cmd_keys_revoke(settings: Settings, args: argparse.Namespace) -> int:
    """Revoke a key by name."""
    with db.connect(prepare(settings)) as conn:
        keys.revoke(conn, args.name)
    out.print(f"key {args.name!r} revoked (the servers stop taking it within seconds)",
              highlight=False)  # fmt: skip
    return 0
