"""``twin layers``: the layer catalogue (data inventory)."""

from __future__ import annotations

import argparse

from rich.table import Table

from cli.common import as_json, out, prepare
from twin import catalogue, db
from twin.settings import Settings


def cmd_layers(settings: Settings, args: argparse.Namespace) -> int:
    """Print the layer catalogue."""
    with db.connect(prepare(settings)) as conn:
        layers = catalogue.list_layers(conn)
    if args.json:
        out.print_json(as_json(layers))
        return 0
    table = Table("name", "kind", "geometry", "features", "provider", "owner", "updated")
    for layer in layers:
        table.add_row(
            layer["name"],
            layer["kind"],
            layer["geometry_type"],
            f"{layer['feature_count']:,}",
            layer["provider"],
            layer["owner_unit"],
            f"{layer['updated_at']:%Y-%m-%d %H:%M}",
        )
    out.print(table)
    return 0
