"""tile_cache keeps its tiles' bytes uncompressed: an MVT gains little from pglz, and
compressing each stored tile and expanding each shared hit cost a data base CPU that
serves the renders (a fifth of a street tile's store)

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("ALTER TABLE tile_cache ALTER COLUMN data SET STORAGE EXTERNAL")


def downgrade() -> None:
    op.execute("ALTER TABLE tile_cache ALTER COLUMN data SET STORAGE EXTENDED")
