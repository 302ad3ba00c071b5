"""wide features: a partial GiST index of the features of wide span (width plus height
of their box over 0.06°) in each built-in layer of lines or polygons, so attach
(spatial.nearest_within_many) searches every other feature in a narrow box and only these
in the wide one their long edges need

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("buildings", "public_spaces", "pipes")
# The same text as twin.spatial.WIDE_SPAN (the planner matches the predicate as written).
WIDE_SPAN = "(ST_XMax(geom) - ST_XMin(geom)) + (ST_YMax(geom) - ST_YMin(geom)) > 0.06"


def upgrade() -> None:
    for table in TABLES:
        op.execute(f"CREATE INDEX idx_{table}_geom_wide ON {table} USING gist (geom)"
                   f" WHERE {WIDE_SPAN}")  # fmt: skip


def downgrade() -> None:
    for table in TABLES:
        op.execute(f"DROP INDEX idx_{table}_geom_wide")
