"""Load a generated demo city into the data base, replacing only the previous demo.

Every demo row carries ``dataset = 'demo'``; a reload deletes those rows and nothing else,
so data imported from providers stays as it was.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from layers.datasets import record_dataset, referring_table
from layers.demo.generate import DemoCity
from twin import catalogue
from twin.bulk import copy_table, table_length
from twin.errors import Conflict

DATASET = "demo"
# Insertion order follows the foreign keys; deletion goes the other way.
LOAD_ORDER = (
    "jurisdictions",
    "units",
    "buildings",
    "public_spaces",
    "pipe_nodes",
    "pipes",
    "sensors",
)
TABLES_WITH_IDS = ("buildings", "public_spaces", "pipe_nodes", "pipes", "sensors")
# Columns that hold ids of another table, generated as 1..n and shifted when loaded.
ID_REFERENCES = {
    "pipe_nodes": {"building_id": "buildings"},
    "pipes": {"from_node_id": "pipe_nodes", "to_node_id": "pipe_nodes"},
}
JURISDICTION_LEVELS_CHILD_FIRST = ("community", "grid", "street", "district", "city")

Progress = Callable[[str, int, int], None]


def demo_loaded(conn: psycopg.Connection) -> bool:
    """Whether a demo city is in the data base."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM buildings WHERE dataset = %s)", (DATASET,))
    return bool(row.fetchone()[0])  # type: ignore[index]


def remove_demo(conn: psycopg.Connection) -> None:
    """Delete every demo row, children before parents; other datasets are untouched."""
    for table in reversed(LOAD_ORDER):
        if table == "jurisdictions":
            for level in JURISDICTION_LEVELS_CHILD_FIRST:
                conn.execute(
                    "DELETE FROM jurisdictions WHERE dataset = %s AND level = %s", (DATASET, level)
                )
        else:
            conn.execute(
                sql.SQL("DELETE FROM {} WHERE dataset = %s").format(sql.Identifier(table)),
                (DATASET,),
            )


def load_demo(
    conn: psycopg.Connection, city: DemoCity, *, progress: Progress | None = None
) -> dict[str, int]:
    """Replace the demo city in one transaction; returns rows loaded per table. Conflict,
    with nothing changed, when other datasets' features refer to the demo's (units
    imported into demo jurisdictions, say)."""
    try:
        return _load_demo(conn, city, progress)
    except psycopg.errors.ForeignKeyViolation as exc:
        referring = referring_table(conn, exc.diag.constraint_name)
        raise Conflict(
            f"the demo city cannot be replaced: features of {referring} that are not the "
            f"demo's refer to it; delete those datasets first (twin datasets {referring} "
            "--delete NAME), or load the demo into another data folder (TWIN_DATA_DIR)"
        ) from exc


def _load_demo(
    conn: psycopg.Connection, city: DemoCity, progress: Progress | None
) -> dict[str, int]:
    counts: dict[str, int] = {}
    with conn.transaction():
        # Keep id ranges stable while we reserve them; readers are not blocked.
        conn.execute(
            sql.SQL("LOCK TABLE {} IN SHARE ROW EXCLUSIVE MODE").format(
                sql.SQL(", ").join(sql.Identifier(t) for t in LOAD_ORDER)
            )
        )
        remove_demo(conn)
        offsets = {table: _max_id(conn, table) for table in TABLES_WITH_IDS}
        for table in LOAD_ORDER:
            columns = _with_dataset(_shift_ids(table, city.tables[table], offsets))
            total = table_length(columns)
            done = 0

            def advance(n: int, table: str = table, total: int = total) -> None:
                nonlocal done
                done += n
                if progress is not None:
                    progress(f"load {table}", done, total)

            counts[table] = copy_table(conn, table, columns, progress=advance)
            if table in TABLES_WITH_IDS:
                _advance_sequence(conn, table)
        for layer in catalogue.BUILTIN_LAYERS:
            catalogue.refresh_layer_statistics(conn, layer.name)
            if counts.get(layer.table_name):
                inventory = {
                    "provider": "twin demo (fictional)",
                    "owner_unit": "区城运中心",
                    "licence": "CC0-1.0",
                    "update_cadence": "on demand",
                }
                catalogue.update_layer_metadata(
                    conn, layer.name, source_crs="EPSG:4326", **inventory
                )
                record_dataset(
                    conn, layer.name, DATASET, source="twin demo city generator",
                    source_crs="EPSG:4326", features=counts[layer.table_name], **inventory,
                )  # fmt: skip
    for table in LOAD_ORDER:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return counts


def _max_id(conn: psycopg.Connection, table: str) -> int:
    row = conn.execute(sql.SQL("SELECT COALESCE(max(id), 0) FROM {}").format(sql.Identifier(table)))
    return int(row.fetchone()[0])  # type: ignore[index]


def _advance_sequence(conn: psycopg.Connection, table: str) -> None:
    """Move the id sequence past the ids we wrote, so later imports do not collide."""
    conn.execute(
        sql.SQL(
            "SELECT setval(pg_get_serial_sequence(%s, 'id'), GREATEST(max(id), 1)) FROM {}"
        ).format(sql.Identifier(table)),
        (table,),
    )


def _shift_ids(table: str, columns: dict[str, Any], offsets: dict[str, int]) -> dict[str, Any]:
    """Generated ids run 1..n per table; shift them (and references) past existing rows."""
    shifted = dict(columns)
    if table in offsets and "id" in shifted:
        shifted["id"] = np.asarray(shifted["id"], dtype=np.int64) + offsets[table]
    for column, target in ID_REFERENCES.get(table, {}).items():
        shifted[column] = [None if v is None else int(v) + offsets[target] for v in columns[column]]
    if table == "sensors":
        shifted["asset_id"] = [
            None if asset_id is None else int(asset_id) + offsets.get(layer, 0)
            for layer, asset_id in zip(columns["asset_layer"], columns["asset_id"], strict=True)
        ]
    return shifted


def _with_dataset(columns: dict[str, Any]) -> dict[str, Any]:
    n = table_length(columns)
    return {**columns, "dataset": [DATASET] * n}
