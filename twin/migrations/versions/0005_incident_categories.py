"""incident categories, the responsibility list, and the owner of every asset

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-08
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ASSET_TABLES = ("buildings", "public_spaces", "pipe_nodes", "pipes", "sensors")
POSITIVE = ("attach_radius_m", "response_hours", "resolve_hours", "fusion_radius_m",
            "fusion_hours")  # fmt: skip


def upgrade() -> None:
    for table in ASSET_TABLES:
        op.add_column(table, sa.Column("owner_unit", sa.Text(), nullable=True))
    op.create_table(
        "incident_categories",
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("parent_code", sa.Text(), nullable=True),
        sa.Column(
            "asset_layers", postgresql.ARRAY(sa.Text()), server_default="{}", nullable=False
        ),
        sa.Column("attach_radius_m", sa.Double(), nullable=False),
        sa.Column("response_hours", sa.Double(), nullable=False),
        sa.Column("resolve_hours", sa.Double(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="3", nullable=False),
        sa.Column("fusion_radius_m", sa.Double(), server_default="50", nullable=False),
        sa.Column("fusion_hours", sa.Double(), server_default="24", nullable=False),
        sa.Column("dataset", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        *(
            sa.CheckConstraint(
                f"{c} > 0 AND {c} < 'Infinity'", name=op.f(f"ck_incident_categories_{c}_positive")
            )
            for c in POSITIVE
        ),
        sa.CheckConstraint(
            "priority BETWEEN 1 AND 5", name=op.f("ck_incident_categories_priority_range")
        ),
        sa.CheckConstraint(
            "parent_code IS DISTINCT FROM code", name=op.f("ck_incident_categories_not_own_parent")
        ),
        sa.ForeignKeyConstraint(
            ["parent_code"], ["incident_categories.code"],
            name=op.f("fk_incident_categories_parent_code_incident_categories"),
            onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("code", name=op.f("pk_incident_categories")),
    )  # fmt: skip
    op.create_index(
        op.f("ix_incident_categories_parent_code"), "incident_categories", ["parent_code"]
    )
    op.create_table(
        "responsibility_rules",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("category_code", sa.Text(), nullable=False),
        sa.Column("jurisdiction_code", sa.Text(), nullable=False),
        sa.Column("asset_owner", sa.Text(), nullable=True),
        sa.Column("unit_code", sa.Text(), nullable=False),
        sa.Column("note", sa.Text(), server_default="", nullable=False),
        sa.Column("dataset", sa.Text(), server_default="", nullable=False),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["category_code"], ["incident_categories.code"],
            name=op.f("fk_responsibility_rules_category_code_incident_categories"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["jurisdiction_code"], ["jurisdictions.code"],
            name=op.f("fk_responsibility_rules_jurisdiction_code_jurisdictions"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["asset_owner"], ["units.code"],
            name=op.f("fk_responsibility_rules_asset_owner_units"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["unit_code"], ["units.code"],
            name=op.f("fk_responsibility_rules_unit_code_units"),
            ondelete="RESTRICT", onupdate="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_responsibility_rules")),
        sa.UniqueConstraint(
            "category_code", "jurisdiction_code", "asset_owner",
            name=op.f("uq_responsibility_rules_rule"),
            postgresql_nulls_not_distinct=True,
        ),
    )  # fmt: skip
    for column in ("category_code", "jurisdiction_code", "unit_code"):
        op.create_index(op.f(f"ix_responsibility_rules_{column}"), "responsibility_rules", [column])


def downgrade() -> None:
    op.drop_table("responsibility_rules")
    op.drop_table("incident_categories")
    for table in ASSET_TABLES:
        op.drop_column(table, "owner_unit")
