"""The datasets of a layer: each import names one (by default the file's name).

A layer holds features from several sources side by side, told apart by the ``dataset``
column every layer table has. These functions list them and delete one of them whole.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from twin import catalogue, schema
from twin.errors import Conflict, NotFound


def list_datasets(conn: psycopg.Connection, layer: str) -> list[dict[str, Any]]:
    """The layer's datasets by name: ``{dataset, features, updated_at}`` each.

    ``updated_at`` is the latest change to a feature of the dataset, or None for layers
    whose table keeps no time (jurisdictions, units). NotFound for an unknown layer.
    """
    table = catalogue.layer_table(conn, layer)  # the allow-list: built-ins and scenes
    has_time = "updated_at" in catalogue.table_columns(conn, table)
    query = sql.SQL(
        "SELECT dataset, count(*) AS features, {updated} AS updated_at"
        " FROM {table} GROUP BY dataset ORDER BY dataset"
    ).format(
        updated=sql.SQL("max(updated_at)" if has_time else "NULL::timestamptz"),
        table=sql.Identifier(table),
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(query))


def delete_dataset(conn: psycopg.Connection, layer: str, dataset: str) -> int:
    """Delete every feature of one dataset of a layer; returns how many were deleted.

    One transaction: the features go and the layer's count and extent in the catalogue
    are recounted, or nothing changes. NotFound for an unknown layer, or a dataset the
    layer does not have (the message names those it has). Conflict when features of
    another layer or dataset depend on these (units in a jurisdiction, say); references
    that may lapse (a pipe node's building) are cleared by the data base.
    """
    table = catalogue.layer_table(conn, layer)
    try:
        with conn.transaction():
            deleted = _delete(conn, table, dataset)
            if deleted == 0:
                raise NotFound(_no_such_dataset(conn, layer, dataset))
            catalogue.refresh_layer_statistics(conn, layer)
    except psycopg.errors.ForeignKeyViolation as exc:
        referring = _referring_table(conn, exc.diag.constraint_name)
        raise Conflict(
            f"dataset {dataset!r} of layer {layer!r} cannot be deleted: features in "
            f"{referring} refer to it; delete or change those first"
        ) from exc
    return deleted


def _delete(conn: psycopg.Connection, table: str, dataset: str) -> int:
    if table == "jurisdictions":
        # A parent may not go before its children: delete level by level, lowest first.
        deleted = 0
        for level in reversed(schema.JURISDICTION_LEVELS):
            deleted += conn.execute(
                "DELETE FROM jurisdictions WHERE dataset = %s AND level = %s", (dataset, level)
            ).rowcount
        return deleted
    query = sql.SQL("DELETE FROM {} WHERE dataset = %s").format(sql.Identifier(table))
    return conn.execute(query, (dataset,)).rowcount


def _no_such_dataset(conn: psycopg.Connection, layer: str, dataset: str) -> str:
    names = [row["dataset"] for row in list_datasets(conn, layer)]
    shown = ", ".join(repr(n) for n in names[:20]) + (
        f" and {len(names) - 20} more" if len(names) > 20 else ""
    )
    return f"layer {layer!r} has no dataset {dataset!r}; " + (
        f"its datasets: {shown}" if names else "it has no features"
    )


def _referring_table(conn: psycopg.Connection, constraint: str | None) -> str:
    """The table whose foreign key stopped a delete (the transaction is rolled back)."""
    row = conn.execute(
        "SELECT conrelid::regclass::text FROM pg_constraint WHERE conname = %s", (constraint,)
    ).fetchone()
    return row[0] if row else "another layer"
