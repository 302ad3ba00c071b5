"""layer_catalogue_deltas: what frequent small writes (intake, dispatch, the closed loop)
added to a layer's count, extent and version, in a few rows of their own, so that
concurrent writers no longer queue on the layer's one catalogue row

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "layer_catalogue_deltas",
        sa.Column("layer", sa.Text(), nullable=False),
        # Any number: a writer takes a row no other open transaction holds.
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("features", sa.BigInteger(), server_default="0", nullable=False),
        # The box of what was added (none yet for a row only stamped with a version).
        sa.Column("west", sa.Double(), nullable=True),
        sa.Column("south", sa.Double(), nullable=True),
        sa.Column("east", sa.Double(), nullable=True),
        sa.Column("north", sa.Double(), nullable=True),
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["layer"], ["layer_catalogue.name"],
            name=op.f("fk_layer_catalogue_deltas_layer_layer_catalogue"),
            ondelete="CASCADE", onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("layer", "shard", name=op.f("pk_layer_catalogue_deltas")),
    )  # fmt: skip


def downgrade() -> None:
    # Fold what the deltas hold into the catalogue rows before they go.
    op.execute(
        """
        UPDATE layer_catalogue c SET
            feature_count = c.feature_count + d.features,
            extent = CASE WHEN d.west IS NULL THEN c.extent ELSE ST_SetSRID(Box2D(ST_Collect(
                coalesce(c.extent, ST_MakeEnvelope(d.west, d.south, d.east, d.north)),
                ST_MakeEnvelope(d.west, d.south, d.east, d.north)))::geometry, 4326) END,
            version = greatest(c.version, d.version),
            updated_at = greatest(c.updated_at, d.updated_at)
        FROM (SELECT layer, sum(features) AS features, min(west) AS west, min(south) AS south,
                     max(east) AS east, max(north) AS north, max(version) AS version,
                     max(updated_at) AS updated_at
              FROM layer_catalogue_deltas GROUP BY layer) AS d
        WHERE d.layer = c.name
        """
    )
    op.drop_table("layer_catalogue_deltas")
