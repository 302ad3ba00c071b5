"""The staged COPY writer: an import's rows go down one COPY a batch at a time, straight
into the layer's table for a dataset seen the first time, else into a stage merged by the
kind's key at the end."""

from __future__ import annotations

from contextlib import ExitStack
from typing import Any

import psycopg
from psycopg import sql

from layers.kinds import LayerKind
from twin import catalogue, changes
from twin.bulk import CopyStream, copy_stream

BULK_LOAD_MIN = 100_000  # features: a first load this large builds indexes after its rows


def _dataset_present(conn: psycopg.Connection, kind: LayerKind, dataset: str) -> bool:
    query = sql.SQL("SELECT EXISTS (SELECT 1 FROM {} WHERE dataset = %s)").format(
        sql.Identifier(kind.table)
    )
    return bool(conn.execute(query, (dataset,)).fetchone()[0])  # type: ignore[index]


class LayerWriter:
    """Where an import's rows go, a batch at a time, through one COPY.

    A dataset seen for the first time has nothing to match, so its rows go straight into
    the layer's table (the file's own duplicates were rejected already): half the work
    of staging. Otherwise they are staged and then inserted or updated by the kind's key
    when the block ends.

    A large first load into a layer that holds (almost) nothing yet builds the table's
    spatial index after the rows are in, as ogr2ogr and pg_restore do: a sorted build is
    several times cheaper than keeping a GiST index current row by row. The layer is
    locked while that import runs, which for an empty layer costs nobody.
    """

    def __init__(
        self, conn: psycopg.Connection, kind: LayerKind, dataset: str, expected: int | None
    ) -> None:
        self.conn, self.kind = conn, kind
        self.table_columns = catalogue.table_columns(conn, kind.table)
        self.direct = kind.key == ("dataset", "source_id") and not _dataset_present(
            conn, kind, dataset
        )
        self.names: list[str] = []
        self.written = self.inserted = self.updated = 0
        self.replaced: changes.Box | None = None  # where the features updated were before
        self._copy = ExitStack()
        self._stream: CopyStream | None = None
        self._rebuild: list[sql.Composable] = []
        if (
            self.direct
            and expected is not None
            and expected >= BULK_LOAD_MIN
            and self._holds_few(expected // 10)
        ):
            self._set_indexes_aside()

    @property
    def rebuilds(self) -> bool:
        """Whether indexes were set aside, to be built when the rows are in."""
        return bool(self._rebuild)

    def _holds_few(self, limit: int) -> bool:
        """Whether the table holds at most ``limit`` rows (counting no further)."""
        query = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {} LIMIT %s) AS head").format(
            sql.Identifier(self.kind.table)
        )
        return int(self.conn.execute(query, (limit + 1,)).fetchone()[0]) <= limit  # type: ignore[index]

    def _set_indexes_aside(self) -> None:
        """Drop the plain secondary indexes (the spatial one above all), remembering the
        server's own definitions to build them again at the end, in the same transaction:
        a failure brings them back. Keys and unique constraints stay and guard the data."""
        rows = self.conn.execute(
            """
            SELECT index.relname, pg_get_indexdef(i.indexrelid)
            FROM pg_index i JOIN pg_class index ON index.oid = i.indexrelid
            WHERE i.indrelid = %s::regclass AND NOT i.indisprimary AND NOT i.indisunique
              AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = i.indexrelid)
            """,
            (self.kind.table,),
        ).fetchall()
        for index, definition in rows:
            self.conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(index)))
            self._rebuild.append(sql.SQL(definition))  # the server's own text

    def __enter__(self) -> LayerWriter:
        return self

    def write(self, rows: dict[str, Any]) -> None:
        """Send one batch of rows (columns the table lacks are left out)."""
        if self._stream is None:
            self.names = [c for c in rows if c in self.table_columns]
            target = self.kind.table
            if not self.direct:
                # Only the loaded columns, without the table's constraints: checked on the
                # way in.
                target = "import_stage"
                self.conn.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE import_stage ON COMMIT DROP AS "
                        "SELECT {} FROM {} WITH NO DATA"
                    ).format(self._names(), sql.Identifier(self.kind.table))
                )
            self._stream = self._copy.enter_context(copy_stream(self.conn, target, self.names))
        self.written += self._stream.write(rows)

    def __exit__(self, *exc: object) -> None:
        self._copy.close()  # the COPY ends: the server has every row
        if exc[0] is not None or self._stream is None:
            return
        if self.direct:
            self.inserted = self.written
        else:
            self.inserted, self.updated = self._merge()
        if self._rebuild:
            # Sorting for the index build wants memory (at least 512 MB; more if set).
            self.conn.execute(
                "SELECT set_config('maintenance_work_mem', greatest(pg_size_bytes("
                "current_setting('maintenance_work_mem')), 512 * 1024 * 1024) / 1024 || 'kB',"
                " true)"
            )
            for statement in self._rebuild:
                self.conn.execute(statement)

    def _names(self) -> sql.Composable:
        return sql.SQL(", ").join(sql.Identifier(c) for c in self.names)

    def _merge(self) -> tuple[int, int]:
        """Insert or update the staged rows by the kind's key; (inserted, updated). Where
        the features replaced were is kept in ``replaced`` (for the change log)."""
        key = sql.SQL(", ").join(sql.Identifier(k) for k in self.kind.key)
        if "geom" in self.table_columns:
            self.replaced = changes.box_of(
                self.conn,
                sql.SQL("SELECT t.geom FROM {} t JOIN import_stage s USING ({})").format(
                    sql.Identifier(self.kind.table), key
                ),
            )
        updates = [
            sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(c))
            for c in self.names
            if c not in self.kind.key
        ]
        if "updated_at" in self.table_columns:
            updates.append(sql.SQL("updated_at = now()"))
        counts = self.conn.execute(
            sql.SQL(
                """
                WITH written AS (
                    INSERT INTO {table} ({names}) SELECT {names} FROM import_stage
                    ON CONFLICT ({key}) DO UPDATE SET {updates}
                    RETURNING (xmax = 0) AS inserted
                )
                SELECT count(*) FILTER (WHERE inserted), count(*) FILTER (WHERE NOT inserted)
                FROM written
                """
            ).format(
                table=sql.Identifier(self.kind.table),
                names=self._names(),
                key=key,
                updates=sql.SQL(", ").join(updates),
            )
        ).fetchone()
        self.conn.execute("DROP TABLE import_stage")
        return int(counts[0]), int(counts[1])  # type: ignore[index]
