"""The datasets of a layer: each import names one (by default the file's name).

A layer holds features from several sources side by side, told apart by the ``dataset``
column every layer table has. Each has a row in the data inventory (数据清单): the file it
came from, its CRS, who provided it, who owns it, its licence and update cadence. These
functions record, list and delete them.
"""

from __future__ import annotations

import re
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from layers.values import NUL, refuse_nul
from twin import catalogue, changes, registry
from twin.errors import Conflict, InvalidInput, NotFound

CONTROL = re.compile(r"[\x01-\x1f\x7f]")


def refuse_control(what: str, value: str | None, *, option: str | None = None) -> None:
    """InvalidInput when a name or an inventory entry (a dataset, provider, owner, licence,
    cadence, a scene's name or title) holds a control character, naming ``what`` and where:
    a tab or line break pasted into one is a mistake, and breaks every listing of it."""
    refuse_nul(what, value, option=option)
    found = CONTROL.search(value or "")
    if found:
        raise InvalidInput(
            f"{what} holds a control character ({found.group()!r} at character "
            f"{found.start() + 1}), which a name may not hold: {value!r}",
            option=option,
        )


def record_dataset(
    conn: psycopg.Connection,
    layer: str,
    dataset: str,
    *,
    source: str,
    source_crs: str | None,
    features: int | None = None,
    **inventory: str | None,
) -> None:
    """Note an import of ``dataset`` into ``layer`` in the data inventory.

    ``inventory`` holds provider, owner_unit, licence and update_cadence: those given
    replace the dataset's, those not given keep what an earlier import said. ``features``
    is the dataset's count when the caller knows it; otherwise it is counted.
    """
    unknown = set(inventory) - set(catalogue.INVENTORY_FIELDS)
    if unknown:
        raise ValueError(f"not inventory fields: {', '.join(sorted(unknown))}")
    refuse_control("the dataset", dataset)
    for name, value in inventory.items():
        refuse_control(name, value)
    if features is None:
        table = registry.resolve(conn, layer).table
        query = sql.SQL("SELECT count(*) FROM {} WHERE dataset = %s").format(sql.Identifier(table))
        features = int(conn.execute(query, (dataset,)).fetchone()[0])  # type: ignore[index]
    given = {name: inventory.get(name) for name in catalogue.INVENTORY_FIELDS}
    fields = [sql.Identifier(n) for n in catalogue.INVENTORY_FIELDS]
    conn.execute(
        sql.SQL(
            """
            INSERT INTO dataset_inventory (layer, dataset, source, source_crs, feature_count,
                                           {fields})
            VALUES (%(layer)s, %(dataset)s, %(source)s, coalesce(%(source_crs)s, ''),
                    %(features)s, {values})
            ON CONFLICT (layer, dataset) DO UPDATE SET
                source = EXCLUDED.source, source_crs = EXCLUDED.source_crs,
                feature_count = EXCLUDED.feature_count, imported_at = now(), {keep_or_replace}
            """
        ).format(
            fields=sql.SQL(", ").join(fields),
            # Not given: empty for a new dataset, what an earlier import said for one known.
            values=sql.SQL(", ").join(
                sql.SQL("coalesce({}, '')").format(sql.Placeholder(n))
                for n in catalogue.INVENTORY_FIELDS
            ),
            keep_or_replace=sql.SQL(", ").join(
                sql.SQL("{0} = coalesce({1}, dataset_inventory.{0})").format(
                    field, sql.Placeholder(n)
                )
                for field, n in zip(fields, catalogue.INVENTORY_FIELDS, strict=True)
            ),
        ),
        {"layer": layer, "dataset": dataset, "source": source, "source_crs": source_crs,
         "features": features, **given},
    )  # fmt: skip


def list_datasets(conn: psycopg.Connection, layer: str) -> list[dict[str, Any]]:
    """The layer's datasets by name, each with its count, latest change and inventory.

    ``{dataset, features, updated_at, source, source_crs, provider, owner_unit, licence,
    update_cadence, imported_at}``: ``updated_at`` is the latest change to a feature of
    the dataset (None for layers whose table keeps no time: jurisdictions, units); the
    inventory fields are empty for a dataset no import recorded. NotFound for an unknown
    layer.
    """
    described = _with_datasets(conn, layer)  # the allow-list: built-ins and scenes
    table = described.table
    has_time = described.time_column == "updated_at"
    query = sql.SQL(
        """
        SELECT f.dataset, f.features, f.updated_at,
               coalesce(i.source, '') AS source, coalesce(i.source_crs, '') AS source_crs,
               {inventory}, i.imported_at
        FROM (SELECT dataset, count(*) AS features, {updated} AS updated_at
              FROM {table} GROUP BY dataset) AS f
        LEFT JOIN dataset_inventory i ON i.layer = %s AND i.dataset = f.dataset
        ORDER BY f.dataset
        """
    ).format(
        inventory=sql.SQL(", ").join(
            sql.SQL("coalesce(i.{0}, '') AS {0}").format(sql.Identifier(n))
            for n in catalogue.INVENTORY_FIELDS
        ),
        updated=sql.SQL("max(updated_at)" if has_time else "NULL::timestamptz"),
        table=sql.Identifier(table),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(query, (layer,)))


def delete_dataset(conn: psycopg.Connection, layer: str, dataset: str) -> int:
    """Delete every feature of one dataset of a layer; returns how many were deleted.

    One transaction: the features go and the layer's count and extent in the catalogue
    are recounted, or nothing changes. NotFound for an unknown layer, or a dataset the
    layer does not have (the message names those it has). Conflict when features of
    another layer or dataset depend on these (units in a jurisdiction, say); references
    that may lapse are cleared: a pipe node's building by the data base, a sensor's asset
    here (sensors name their asset by layer and id, which no foreign key can check).
    """
    if NUL in dataset:  # the data base could not even look for it
        raise InvalidInput(f"a dataset name holds no NUL character (\\0): {dataset!r}")
    described = _with_datasets(conn, layer)
    try:
        with conn.transaction():
            deleted, box = delete_features(conn, described, dataset)
            if deleted == 0:
                raise NotFound(_no_such_dataset(conn, layer, dataset))
            with conn.cursor(row_factory=dict_row) as cur:
                removed = cur.execute(
                    "DELETE FROM dataset_inventory WHERE layer = %s AND dataset = %s RETURNING *",
                    (layer, dataset),
                ).fetchone()
            changes.record(
                conn, layer, "delete", box=box, dataset=dataset, features=deleted,
                table=described.table,
            )  # fmt: skip
            if removed is not None:  # the layer's entry forgets the terms of what went
                catalogue.forget_dataset_terms(conn, layer, removed)
    except psycopg.errors.ForeignKeyViolation as exc:
        referring = referring_table(conn, exc.diag.constraint_name)
        raise Conflict(
            f"dataset {dataset!r} of layer {layer!r} cannot be deleted: features in "
            f"{referring} refer to it; delete or change those first"
        ) from exc
    return deleted


def forget_emptied_datasets(conn: psycopg.Connection, layer: str, keep: str) -> list[str]:
    """Forget, in the inventory, the datasets of ``layer`` other than ``keep`` that hold no
    feature any more, and the terms the layer's entry had from them (as a delete does);
    returns their names.

    For layers matched on their own key across datasets (sensors by device_id, units and
    jurisdictions by code): an import into ``keep`` takes over the features it matches,
    and may leave the datasets they came from empty.
    """
    table = registry.resolve(conn, layer).table
    with conn.cursor(row_factory=dict_row) as cur:
        removed = cur.execute(
            sql.SQL(
                """
                DELETE FROM dataset_inventory i
                WHERE i.layer = %s AND i.dataset <> %s
                  AND NOT EXISTS (SELECT 1 FROM {} t WHERE t.dataset = i.dataset)
                RETURNING *
                """
            ).format(sql.Identifier(table)),
            (layer, keep),
        ).fetchall()
    for entry in sorted(removed, key=lambda e: e["imported_at"]):
        catalogue.forget_dataset_terms(conn, layer, entry)
    return sorted(e["dataset"] for e in removed)


def _with_datasets(conn: psycopg.Connection, layer: str) -> registry.Layer:
    """The layer called ``layer`` when its features come in datasets; InvalidInput for
    one written otherwise (the incidents: intake writes them, nothing deletes them)."""
    described = registry.resolve(conn, layer)
    if not described.imported:
        raise InvalidInput(
            f"layer {layer!r} holds no datasets: its features are written by the one map "
            "itself, never imported or deleted as a dataset"
        )
    return described


def delete_features(
    conn: psycopg.Connection, layer: registry.Layer, dataset: str
) -> tuple[int, changes.Box | None]:
    """Delete the features of one dataset of ``layer``, children before parents in a
    layer that holds its own hierarchy; returns how many went and the box they covered
    (for the change log, which the caller writes). A sensor's asset among them lapses."""
    table = sql.Identifier(layer.table)
    box = changes.box_of(
        conn, sql.SQL("SELECT geom FROM {} WHERE dataset = %s").format(table), (dataset,)
    )
    if layer.hierarchy is not None:
        column, levels = layer.hierarchy
        deleted = 0
        for level in reversed(levels):  # a parent may not go before its children
            deleted += conn.execute(
                sql.SQL("DELETE FROM {} WHERE dataset = %s AND {} = %s").format(
                    table, sql.Identifier(column)
                ),
                (dataset, level),
            ).rowcount
        return deleted, box
    if layer.id_column != "id":
        query = sql.SQL("DELETE FROM {} WHERE dataset = %s").format(table)
        return conn.execute(query, (dataset,)).rowcount, box
    # Sensors name their asset by layer and id, which no foreign key can check.
    lapses = [
        sql.SQL(
            ", {name} AS (UPDATE {holder} SET {lc} = NULL, {ic} = NULL"
            " WHERE {lc} = %(layer)s AND {ic} IN (SELECT id FROM gone))"
        ).format(
            name=sql.Identifier(f"lapsed_{holder.name}"), holder=sql.Identifier(holder.table),
            lc=sql.Identifier(holder.asset_reference[0]),
            ic=sql.Identifier(holder.asset_reference[1]),
        )
        for holder in registry.BUILTIN_LAYERS
        if holder.asset_reference is not None
    ]  # fmt: skip
    query = sql.SQL(
        "WITH gone AS (DELETE FROM {} WHERE dataset = %(dataset)s RETURNING id){}"
        " SELECT count(*) FROM gone"
    ).format(table, sql.SQL("").join(lapses))
    row = conn.execute(query, {"dataset": dataset, "layer": layer.name}).fetchone()
    return int(row[0]) if row else 0, box


def _no_such_dataset(conn: psycopg.Connection, layer: str, dataset: str) -> str:
    names = [row["dataset"] for row in list_datasets(conn, layer)]
    shown = ", ".join(repr(n) for n in names[:20]) + (
        f" and {len(names) - 20} more" if len(names) > 20 else ""
    )
    return f"layer {layer!r} has no dataset {dataset!r}; " + (
        f"its datasets: {shown}" if names else "it has no features"
    )


def referring_table(conn: psycopg.Connection, constraint: str | None) -> str:
    """The table whose foreign key stopped a delete (the transaction is rolled back)."""
    row = conn.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE conname = %s", (constraint,)
    ).fetchone()
    return row[0] if row else "another layer"
