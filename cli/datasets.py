"""``twin datasets LAYER``: a layer's datasets with their counts, or delete one."""

from __future__ import annotations

import argparse

from rich.table import Table
from rich.text import Text

from cli.common import as_json, console, out, prepare
from layers.datasets import delete_dataset, list_datasets
from twin import db
from twin.settings import Settings


def cmd_datasets(settings: Settings, args: argparse.Namespace) -> int:
    """List a layer's datasets, or delete one of them."""
    with db.connect(prepare(settings)) as conn:
        if args.delete is not None:
            deleted = delete_dataset(conn, args.layer, args.delete)
            conn.commit()
            if args.json:
                out.print_json(
                    as_json({"layer": args.layer, "dataset": args.delete, "deleted": deleted})
                )
            else:
                console.print(
                    f"deleted dataset {args.delete} of {args.layer}: {deleted:,} features",
                    highlight=False,
                    markup=False,
                )
            return 0
        datasets = list_datasets(conn, args.layer)
    if args.json:
        out.print_json(as_json(datasets))
        return 0
    if not datasets:
        console.print(f"layer {args.layer} has no features", highlight=False, markup=False)
        return 0
    table = Table("dataset", "features", "updated", "source", "CRS", "provider", "owner",
                  "licence")  # fmt: skip
    for row in datasets:
        updated = row["updated_at"] or row["imported_at"]
        table.add_row(  # names come from files and people: text, never rich markup
            Text(row["dataset"]),
            f"{row['features']:,}",
            f"{updated:%Y-%m-%d %H:%M}" if updated else "",
            *(Text(row[k]) for k in ("source", "source_crs", "provider", "owner_unit", "licence")),
        )
    out.print(table)
    return 0
