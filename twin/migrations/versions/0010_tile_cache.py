"""tile_cache: the rendered vector tiles every API process shares (tiles/cache.py), and
the transaction of each change in the log, so a cached tile can tell which changes its
render did not see

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The writer's transaction, given by the default: changes.record's INSERT needs no
    # change. A change id is given out when the row is written, not when it commits, so
    # ids cannot say whether a render saw a change; the transaction and the render's
    # snapshot can (pg_visible_in_snapshot). Rows before this migration keep NULL: they
    # committed before any tile was cached.
    op.execute("ALTER TABLE layer_changes ADD COLUMN xact xid8")
    op.execute("ALTER TABLE layer_changes ALTER COLUMN xact SET DEFAULT pg_current_xact_id()")
    op.execute("CREATE INDEX ix_layer_changes_xact ON layer_changes (xact)")
    # UNLOGGED: a cache, rebuilt by rendering, needs no write-ahead log (writes cost half,
    # and a crash empties it, which is safe); no replica reads it.
    op.execute(
        """
        CREATE UNLOGGED TABLE tile_cache (
            tms text NOT NULL,
            layers text[] NOT NULL,          -- sorted; {*} the composite of every layer
            z smallint NOT NULL,
            x integer NOT NULL,
            y integer NOT NULL,
            data bytea NOT NULL,             -- the MVT; empty for a tile that holds nothing
            etag text NOT NULL,
            bytes integer NOT NULL,
            truncated text[] NOT NULL DEFAULT '{}',  -- the layers the caps cut
            snapshot pg_snapshot NOT NULL,   -- what the render saw
            -- The tile and its buffer, in the storage CRS: a change under it drops it.
            envelope geometry(Polygon, 4326) NOT NULL,
            expires_at timestamptz,          -- content that turns with the clock (overdue)
            rendered_at timestamptz NOT NULL DEFAULT now(),
            used_at timestamptz NOT NULL DEFAULT now(),
            CONSTRAINT pk_tile_cache PRIMARY KEY (tms, layers, z, x, y)
        )
        """
    )
    op.execute("CREATE INDEX idx_tile_cache_envelope ON tile_cache USING gist (envelope)")
    op.execute("CREATE INDEX ix_tile_cache_used_at ON tile_cache (used_at)")


def downgrade() -> None:
    op.drop_table("tile_cache")
    op.execute("ALTER TABLE layer_changes DROP COLUMN xact")
