"""change log: every write that changes a layer's features, with its box, and each
layer's version

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import geoalchemy2
import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "layer_catalogue",
        sa.Column("version", sa.BigInteger(), server_default="0", nullable=False),
    )
    op.create_table(
        "layer_changes",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("operation", sa.Text(), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=True),
        sa.Column("features", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "bbox",
            geoalchemy2.types.Geometry(
                geometry_type="POLYGON", srid=4326, spatial_index=False, from_text="ST_GeomFromEWKT"
            ),
            nullable=True,
        ),
        sa.Column(
            "changed_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_layer_changes")),
    )
    op.create_index(op.f("ix_layer_changes_layer"), "layer_changes", ["layer"], unique=False)
    op.create_index(
        "idx_layer_changes_bbox", "layer_changes", ["bbox"], unique=False, postgresql_using="gist"
    )


def downgrade() -> None:
    op.drop_table("layer_changes")
    op.drop_column("layer_catalogue", "version")
