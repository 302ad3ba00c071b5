"""``twin incidents sweep``: supervise (督办) and escalate the overdue incidents."""

from __future__ import annotations

import argparse

from cli.common import as_json, out, prepare
from twin import db
from twin.incidents import loop
from twin.settings import Settings


def cmd_incidents_sweep(settings: Settings, args: argparse.Namespace) -> int:
    """Run the SLA sweep once and say what it marked."""
    with db.connect(prepare(settings)) as conn:
        done = loop.sweep(conn)
    if args.json:
        out.print_json(as_json({"supervised": done, "count": len(done)}))
        return 0
    for item in done:
        where = f", escalated to {item['centre']}" if item["centre"] else ", no centre above it"
        out.print(f"incident {item['id']}: {' and '.join(item['clocks'])} overdue{where}",
                      highlight=False)  # fmt: skip
    out.print(f"{len(done)} incident{'s' if len(done) != 1 else ''} newly supervised",
                  highlight=False)  # fmt: skip
    return 0
