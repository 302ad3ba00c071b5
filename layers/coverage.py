"""Coverage of jurisdictions: every point in exactly one unit of each level.

After an import the siblings under each affected parent are checked: the gap they leave in
their parent, where they overlap each other, and where they reach outside their parent.
Areas are in square metres (geography); slivers under the tolerance are rounding, not news.
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.rows import dict_row

TOLERANCE_M2 = 1.0


def check(conn: psycopg.Connection, codes: list[str]) -> dict[str, Any]:
    """Gaps, overlaps and children outside parents around the jurisdictions ``codes``."""
    with conn.cursor(row_factory=dict_row) as cur:
        # The parents checked: those among the jurisdictions and their parents that have
        # children (a grid with none under it has no coverage to check).
        parents = [
            r["code"]
            for r in cur.execute(
                """
                SELECT DISTINCT p.code FROM jurisdictions p
                WHERE (p.code = ANY(%(codes)s)
                       OR p.code IN (SELECT parent_code FROM jurisdictions
                                     WHERE code = ANY(%(codes)s)))
                  AND EXISTS (SELECT 1 FROM jurisdictions c WHERE c.parent_code = p.code)
                """,
                {"codes": codes},
            )
        ]
        gaps = list(
            cur.execute(
                """
                SELECT p.code AS parent, p.level,
                       ST_Area(ST_Difference(p.geom, ST_Union(c.geom))::geography) AS gap_m2
                FROM jurisdictions p JOIN jurisdictions c ON c.parent_code = p.code
                WHERE p.code = ANY(%s)
                GROUP BY p.code, p.level, p.geom
                """,
                (parents,),
            )
        )
        overlaps = list(
            cur.execute(
                """
                SELECT a.code AS a, b.code AS b, a.parent_code AS parent,
                       ST_Area(ST_Intersection(a.geom, b.geom)::geography) AS overlap_m2
                FROM jurisdictions a JOIN jurisdictions b
                  ON a.parent_code = b.parent_code AND a.code < b.code
                 AND a.geom && b.geom AND ST_Intersects(a.geom, b.geom)
                WHERE a.parent_code = ANY(%s)
                """,
                (parents,),
            )
        )
        outside = list(
            cur.execute(
                """
                SELECT c.code, c.parent_code AS parent,
                       ST_Area(ST_Difference(c.geom, p.geom)::geography) AS outside_m2
                FROM jurisdictions c JOIN jurisdictions p ON p.code = c.parent_code
                WHERE c.parent_code = ANY(%s)
                """,
                (parents,),
            )
        )
    return {
        "parents_checked": len(parents),
        "gaps": [_rounded(g, "gap_m2") for g in gaps if g["gap_m2"] > TOLERANCE_M2],
        "overlaps": [_rounded(o, "overlap_m2") for o in overlaps if o["overlap_m2"] > TOLERANCE_M2],
        "outside_parent": [
            _rounded(o, "outside_m2") for o in outside if o["outside_m2"] > TOLERANCE_M2
        ],
    }


def _rounded(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {**row, key: round(float(row[key]), 1)}


def describe(report: dict[str, Any]) -> list[str]:
    """The coverage report as lines for a person."""
    lines = [
        f"gap of {g['gap_m2']:,.1f} m² under {g['parent']} ({g['level']})" for g in report["gaps"]
    ]
    lines += [
        f"{o['a']} and {o['b']} overlap by {o['overlap_m2']:,.1f} m²" for o in report["overlaps"]
    ]
    lines += [
        f"{o['code']} reaches {o['outside_m2']:,.1f} m² outside its parent {o['parent']}"
        for o in report["outside_parent"]
    ]
    return lines or [f"coverage: no gaps or overlaps under {report['parents_checked']} parent(s)"]
