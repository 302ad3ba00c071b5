"""incident_photos: the photos of a report (随手拍) and of an incident's timeline, each as
uploaded (for staff) and as a public copy re-encoded without its metadata

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-20
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# As twin.incidents.photos has them at this revision (a migration does not import the code).
MEDIA_TYPES = ("image/jpeg", "image/png", "image/webp")


def upgrade() -> None:
    op.create_table(
        "incident_photos",
        # A random token, not a serial: the public copy is served to whoever has its id.
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("incident_id", sa.BigInteger(), nullable=False),
        # The timeline event that added it; null for a photo sent with the report itself.
        sa.Column("event_id", sa.BigInteger(), nullable=True),
        sa.Column("media_type", sa.Text(), nullable=False),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("height", sa.Integer(), nullable=False),
        sa.Column("original", sa.LargeBinary(), nullable=False),
        sa.Column("original_sha256", sa.Text(), nullable=False),
        sa.Column("public", sa.LargeBinary(), nullable=False),
        sa.Column("public_sha256", sa.Text(), nullable=False),
        sa.Column("taken_at", sa.DateTime(timezone=True), nullable=True),
        # clock_timestamp: the photos of one report keep the order they were sent in.
        sa.Column("created_at", sa.DateTime(timezone=True),
                  server_default=sa.text("clock_timestamp()"), nullable=False),
        sa.CheckConstraint("media_type IN ('" + "', '".join(MEDIA_TYPES) + "')",
                           name=op.f("ck_incident_photos_media_type_allowed")),
        sa.CheckConstraint("width > 0 AND height > 0", name=op.f("ck_incident_photos_size")),
        sa.ForeignKeyConstraint(
            ["incident_id"], ["incidents.id"], name=op.f("fk_incident_photos_incident_id_incidents"),
            ondelete="RESTRICT",
        ),
        sa.ForeignKeyConstraint(
            ["event_id"], ["incident_events.id"],
            name=op.f("fk_incident_photos_event_id_incident_events"), ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_incident_photos")),
    )  # fmt: skip
    op.create_index(
        "ix_incident_photos_incident_id_created_at",
        "incident_photos",
        ["incident_id", "created_at"],
    )
    # JPEG, PNG and WebP are compressed already: stored out of line without another try.
    for column in ("original", "public"):
        op.execute(f"ALTER TABLE incident_photos ALTER COLUMN {column} SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.drop_table("incident_photos")
