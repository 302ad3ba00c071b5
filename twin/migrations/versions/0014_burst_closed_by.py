"""network_bursts: who closed a burst and what they said of it (the pipe mended, how)

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-04
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("network_bursts", sa.Column("closed_by", sa.Text(), nullable=True))
    op.add_column("network_bursts", sa.Column("close_note", sa.Text(), nullable=True))


def downgrade() -> None:
    op.drop_column("network_bursts", "close_note")
    op.drop_column("network_bursts", "closed_by")
