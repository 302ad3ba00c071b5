"""terrain: DEM tiles in PostGIS raster, and the terrain layer kind

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS_BEFORE = (
    "'building', 'public_space', 'pipe', 'pipe_node', 'sensor', 'jurisdiction', 'unit', 'scene'"
)


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS postgis_raster")
    op.create_table(
        "terrain_tiles",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("dataset", sa.Text(), server_default="", nullable=False),
        sa.Column("rast", geoalchemy2.types.Raster(spatial_index=False), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_terrain_tiles")),
    )
    # Sampling finds the tile under a point through the tiles' hulls.
    op.execute(
        "CREATE INDEX idx_terrain_tiles_rast ON terrain_tiles USING gist (ST_ConvexHull(rast))"
    )
    op.drop_constraint(op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue", type_="check")
    op.create_check_constraint(
        op.f("ck_layer_catalogue_kind_allowed"),
        "layer_catalogue",
        f"kind IN ({KINDS_BEFORE}, 'terrain')",
    )


def downgrade() -> None:
    op.execute("DELETE FROM layer_catalogue WHERE kind = 'terrain'")
    op.drop_constraint(op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue", type_="check")
    op.create_check_constraint(
        op.f("ck_layer_catalogue_kind_allowed"), "layer_catalogue", f"kind IN ({KINDS_BEFORE})"
    )
    op.drop_table("terrain_tiles")
