"""Load a generated demo city into the data base, replacing only the previous demo.

Every demo row carries ``dataset = 'demo'``; a reload deletes those rows and nothing else,
so data imported from providers stays as it was.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from importlib import resources
from typing import Any

import numpy as np
import psycopg
from psycopg import sql

from layers.datasets import delete_features, record_dataset, referring_table
from layers.demo.generate import DemoCity
from layers.demo.history import remove_history
from layers.demo.terrain import load_demo_terrain
from twin import catalogue, changes, registry
from twin.bulk import copy_table, table_length
from twin.errors import Conflict
from twin.incidents import categories as incident_categories
from twin.incidents import responsibilities

DATASET = "demo"
# Insertion order follows the references (the registry lists layers so); deletion goes the
# other way.
LOAD_ORDER = tuple(layer.table for layer in registry.IMPORTED_LAYERS)
TABLES_WITH_IDS = tuple(
    layer.table for layer in registry.IMPORTED_LAYERS if layer.id_column == "id"
)
# Columns that hold ids of another table, generated as 1..n and shifted when loaded.
ID_REFERENCES = {
    layer.table: {
        column: registry.BUILTIN[target].table
        for column, target in layer.references.items()
        if registry.BUILTIN[target].id_column == "id"
    }
    for layer in registry.IMPORTED_LAYERS
}

Progress = Callable[[str, int, int], None]


def demo_loaded(conn: psycopg.Connection) -> bool:
    """Whether a demo city is in the data base."""
    row = conn.execute("SELECT EXISTS (SELECT 1 FROM buildings WHERE dataset = %s)", (DATASET,))
    return bool(row.fetchone()[0])  # type: ignore[index]


def remove_demo(conn: psycopg.Connection) -> dict[str, changes.Box | None]:
    """Delete every demo row, children before parents; other datasets are untouched.
    Returns, per layer, the box of what went (for the change log)."""
    boxes = {}
    for layer in reversed(registry.IMPORTED_LAYERS):
        boxes[layer.name] = delete_features(conn, layer, DATASET)[1]
    return boxes


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
        # The demo's history first (it refers to the categories and units), then its
        # responsibility list and categories (they refer to its units).
        remove_history(conn)
        conn.execute("DELETE FROM responsibility_rules WHERE dataset = %s", (DATASET,))
        conn.execute("DELETE FROM incident_categories WHERE dataset = %s", (DATASET,))
        removed = remove_demo(conn)
        offsets = {table: _max_id(conn, table) for table in TABLES_WITH_IDS}
        for layer in registry.IMPORTED_LAYERS:
            table = layer.table
            columns = _with_dataset(_shift_ids(layer, city.tables[layer.name], offsets))
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
        for layer in registry.IMPORTED_LAYERS:
            added = changes.box_of(
                conn,
                sql.SQL("SELECT geom FROM {} WHERE dataset = %s").format(
                    sql.Identifier(layer.table)
                ),
                (DATASET,),
            )
            changes.record(
                conn, layer.name, "demo", box=changes.union(removed[layer.name], added),
                dataset=DATASET, features=counts[layer.table], table=layer.table,
            )  # fmt: skip
            if counts.get(layer.table):
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
                    source_crs="EPSG:4326", features=counts[layer.table], **inventory,
                )  # fmt: skip
        counts.update(load_demo_terrain(conn, city))  # the ground they stand on
        counts.update(_load_incident_lists(conn, city))
    for table in LOAD_ORDER:
        conn.execute(sql.SQL("ANALYZE {}").format(sql.Identifier(table)))
    return counts


def _demo_rows(name: str) -> list[dict[str, str | None]]:
    """A data file of layers/demo, as rows (blank cells None)."""
    text = resources.files("layers.demo").joinpath(name).read_text(encoding="utf-8")
    return [{k: v or None for k, v in row.items()} for row in csv.DictReader(io.StringIO(text))]


def _load_incident_lists(conn: psycopg.Connection, city: DemoCity) -> dict[str, int]:
    """The demo's categories (layers/demo/categories.csv) and its responsibility list, made
    from layers/demo/responsibilities.csv for each district or street of the city: a rule's
    ``unit`` and ``asset_owner`` there are the keys of the demo's units (U-<district>-KEY
    for a district, U-<street>-KEY for a street)."""
    stored = incident_categories.store(conn, _demo_rows("categories.csv"), dataset=DATASET)
    assert not stored.rejected, [r.message() for r in stored.rejected]
    juris = city.tables["jurisdictions"]
    places: dict[str, list[str]] = {"city": [], "district": [], "street": []}
    for code, level in zip(juris["code"], juris["level"], strict=True):
        if level in places:
            places[level].append(code)
    rules = []
    for row in _demo_rows("responsibilities.csv"):
        for code in places[str(row["level"])]:
            district = code[:6]
            unit = f"U-{code[:9]}-{row['unit']}" if row["level"] == "street" else (
                f"U-{district}-{row['unit']}" if row["level"] == "district" else "U-310000-CENTRE"
            )  # fmt: skip
            owner = f"U-{district}-{row['asset_owner']}" if row["asset_owner"] else None
            rules.append({"category_code": row["category_code"], "jurisdiction_code": code,
                          "unit_code": unit, "asset_owner": owner, "note": row["note"]})  # fmt: skip
    ruled = responsibilities.store(conn, rules, dataset=DATASET)
    assert not ruled.rejected, [r.message() for r in ruled.rejected[:5]]
    return {"incident_categories": stored.inserted + stored.updated,
            "responsibility_rules": ruled.inserted + ruled.updated}  # fmt: skip


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


def _shift_ids(
    layer: registry.Layer, columns: dict[str, Any], offsets: dict[str, int]
) -> dict[str, Any]:
    """Generated ids run 1..n per table; shift them (and references) past existing rows."""
    shifted = dict(columns)
    if layer.table in offsets and "id" in shifted:
        shifted["id"] = np.asarray(shifted["id"], dtype=np.int64) + offsets[layer.table]
    for column, target in ID_REFERENCES[layer.table].items():
        shifted[column] = [None if v is None else int(v) + offsets[target] for v in columns[column]]
    if layer.asset_reference is not None:  # an asset of any layer, named by layer and id
        layer_column, id_column = layer.asset_reference
        shifted[id_column] = [
            None if asset_id is None else int(asset_id) + offsets.get(asset_layer, 0)
            for asset_layer, asset_id in zip(columns[layer_column], columns[id_column], strict=True)
        ]
    return shifted


def _with_dataset(columns: dict[str, Any]) -> dict[str, Any]:
    n = table_length(columns)
    return {**columns, "dataset": [DATASET] * n}
