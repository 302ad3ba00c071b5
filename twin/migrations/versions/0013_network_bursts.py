"""network_bursts: a burst turned into action, its isolation kept while it is open, so that
isolations open at the same time can be told apart and their overlaps reported

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from geoalchemy2 import Geometry
from sqlalchemy.dialects import postgresql

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "network_bursts",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("network", sa.Text(), nullable=False),
        sa.Column("status", sa.Text(), server_default="open", nullable=False),
        # The burst's incident; its valve work orders are incidents too.
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        sa.Column("work_order_ids", postgresql.ARRAY(sa.BigInteger()), server_default="{}",
                  nullable=False),
        sa.Column("pipe_id", sa.BigInteger(), nullable=True),
        # What the isolation shuts and empties: to find overlapping isolations.
        sa.Column("valve_ids", postgresql.ARRAY(sa.BigInteger()), server_default="{}",
                  nullable=False),
        sa.Column("isolated_pipe_ids", postgresql.ARRAY(sa.BigInteger()), server_default="{}",
                  nullable=False),
        sa.Column("answer", postgresql.JSONB(astext_type=sa.Text()), server_default="{}",
                  nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=True),
        sa.Column("payload_hash", sa.Text(), nullable=True),
        sa.Column("created_by", sa.Text(), server_default="", nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("closed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("geom", Geometry(geometry_type="GEOMETRY", srid=4326, spatial_index=False,
                                   from_text="ST_GeomFromEWKT", name="geometry"), nullable=True),
        sa.CheckConstraint("status IN ('open', 'closed')", name=op.f("ck_network_bursts_status_allowed")),
        sa.ForeignKeyConstraint(["incident_id"], ["incidents.id"],
                                name=op.f("fk_network_bursts_incident_id_incidents"), ondelete="RESTRICT"),
        sa.ForeignKeyConstraint(["pipe_id"], ["pipes.id"], name=op.f("fk_network_bursts_pipe_id_pipes"),
                                ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_network_bursts")),
        sa.UniqueConstraint("idempotency_key", name=op.f("uq_network_bursts_idempotency_key")),
    )  # fmt: skip
    op.create_index("ix_network_bursts_network_status", "network_bursts", ["network", "status"])
    op.create_index("idx_network_bursts_geom", "network_bursts", ["geom"], postgresql_using="gist")


def downgrade() -> None:
    op.drop_table("network_bursts")
