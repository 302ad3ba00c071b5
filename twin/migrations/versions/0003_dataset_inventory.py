"""dataset inventory: who provided each data set of a layer, on what terms, from which file

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TEXT_FIELDS = ("source", "source_crs", "provider", "owner_unit", "licence", "update_cadence")


def upgrade() -> None:
    op.create_table(
        "dataset_inventory",
        sa.Column("layer", sa.Text(), nullable=False),
        sa.Column("dataset", sa.Text(), nullable=False),
        *(sa.Column(name, sa.Text(), server_default="", nullable=False) for name in TEXT_FIELDS),
        sa.Column("feature_count", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column(
            "imported_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["layer"],
            ["layer_catalogue.name"],
            name=op.f("fk_dataset_inventory_layer_layer_catalogue"),
            ondelete="CASCADE",
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("layer", "dataset", name=op.f("pk_dataset_inventory")),
    )


def downgrade() -> None:
    op.drop_table("dataset_inventory")
