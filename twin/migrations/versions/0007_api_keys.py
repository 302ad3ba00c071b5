"""API keys: stored hashed, each with a role and a jurisdiction (and unit) scope

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As twin.schema has them at this revision (a migration does not import the schema).
ROLES = ("resident", "grid_inspector", "dispatcher", "unit_staff", "supervisor", "engineer",
         "admin", "external")  # fmt: skip


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("role", sa.Text(), nullable=False),
        sa.Column("digest", sa.Text(), nullable=False),
        sa.Column("shown", sa.Text(), nullable=False),
        sa.Column("jurisdiction_code", sa.Text(), nullable=True),
        sa.Column("unit_code", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("role IN (" + ", ".join(f"'{r}'" for r in ROLES) + ")",
                           name=op.f("ck_api_keys_role_allowed")),
        sa.CheckConstraint("role <> 'unit_staff' OR unit_code IS NOT NULL",
                           name=op.f("ck_api_keys_unit_staff_unit")),
        sa.ForeignKeyConstraint(["jurisdiction_code"], ["jurisdictions.code"],
                                name=op.f("fk_api_keys_jurisdiction_code_jurisdictions"),
                                ondelete="RESTRICT", onupdate="CASCADE"),
        sa.ForeignKeyConstraint(["unit_code"], ["units.code"],
                                name=op.f("fk_api_keys_unit_code_units"),
                                ondelete="RESTRICT", onupdate="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sa.UniqueConstraint("digest", name=op.f("uq_api_keys_digest")),
    )  # fmt: skip


def downgrade() -> None:
    op.drop_table("api_keys")
