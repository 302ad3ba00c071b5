"""The responsibility list (责任清单): which unit answers for a category of incident in a
jurisdiction, optionally only for assets a given unit owns.

A rule covers its category and every category under it, its jurisdiction and every
jurisdiction inside it. ``candidate_rules`` lists the rules that could apply to a report,
in the order of precedence dispatch follows: a rule for the owner of the nearest attached
asset first (a water company answers for its mains wherever they run), then the most
specific category, then the most specific jurisdiction.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg.rows import dict_row

from twin.errors import Conflict, InvalidInput, NotFound
from twin.incidents.categories import MAX_DEPTH, get_category
from twin.incidents.rows import Rejected, RowError, Stored, key_of, text

COLUMNS = ("category_code", "jurisdiction_code", "asset_owner", "unit_code", "note")
MAX_PAGE = 10_000


@dataclass(frozen=True)
class Rule:
    """A rule of the responsibility list."""

    category_code: str
    jurisdiction_code: str
    asset_owner: str | None
    unit_code: str
    note: str = ""
    dataset: str = ""


def parse(values: Mapping[str, Any], *, dataset: str = "") -> Rule:
    """A rule from a row's values; RowError naming the column of the first that is wrong.
    (Whether the codes exist is checked against the data base by ``store``.)"""
    return Rule(
        category_code=text("category_code", values.get("category_code"), required=True,
                           code=True),  # type: ignore[arg-type]
        jurisdiction_code=text("jurisdiction_code", values.get("jurisdiction_code"),
                               required=True, code=True),  # type: ignore[arg-type]
        asset_owner=text("asset_owner", values.get("asset_owner"), code=True),
        unit_code=text("unit_code", values.get("unit_code"), required=True,
                       code=True),  # type: ignore[arg-type]
        note=text("note", values.get("note")) or "",
        dataset=dataset,
    )  # fmt: skip


def _known(conn: psycopg.Connection, table: str, codes: set[str]) -> set[str]:
    query = {"categories": "SELECT code FROM incident_categories WHERE code = ANY(%s)",
             "jurisdictions": "SELECT code FROM jurisdictions WHERE code = ANY(%s)",
             "units": "SELECT code FROM units WHERE code = ANY(%s)"}[table]  # fmt: skip
    return {code for (code,) in conn.execute(query, (sorted(codes),))}


def store(conn: psycopg.Connection, rows: Sequence[Mapping[str, Any]], *,
          dataset: str = "") -> Stored:  # fmt: skip
    """Check and upsert rules by (category, jurisdiction, asset owner), in one transaction:
    a row naming a category, jurisdiction or unit that is not stored, or given twice, is
    rejected naming its row and column; the others are stored."""
    stored = Stored()
    parsed: list[tuple[int, Rule]] = []
    for n, values in enumerate(rows, start=1):
        try:
            parsed.append((n, parse(values, dataset=dataset)))
        except RowError as exc:
            stored.rejected.append(Rejected(n, _key(values), exc.column, str(exc)))
    categories = _known(conn, "categories", {r.category_code for _, r in parsed})
    places = _known(conn, "jurisdictions", {r.jurisdiction_code for _, r in parsed})
    units = _known(conn, "units", {c for _, r in parsed for c in (r.unit_code, r.asset_owner)
                                   if c is not None})  # fmt: skip
    seen: dict[tuple[str, str, str | None], int] = {}
    good: list[Rule] = []
    for n, rule in parsed:
        key = f"{rule.category_code} in {rule.jurisdiction_code}" + (
            f" for {rule.asset_owner}" if rule.asset_owner else ""
        )
        why = None
        if rule.category_code not in categories:
            why = ("category_code", f"category_code {rule.category_code!r} is not a category "
                   "(import the categories first)")  # fmt: skip
        elif rule.jurisdiction_code not in places:
            why = ("jurisdiction_code", f"jurisdiction_code {rule.jurisdiction_code!r} is not "
                   "a jurisdiction (import the jurisdictions first)")  # fmt: skip
        elif rule.unit_code not in units:
            why = ("unit_code", f"unit_code {rule.unit_code!r} is not a unit (import the "
                   "units first)")  # fmt: skip
        elif rule.asset_owner is not None and rule.asset_owner not in units:
            why = ("asset_owner", f"asset_owner {rule.asset_owner!r} is not a unit (import "
                   "the units first)")  # fmt: skip
        else:
            triple = (rule.category_code, rule.jurisdiction_code, rule.asset_owner)
            if triple in seen:
                why = ("category_code", f"a rule for {key} is given twice (rows {seen[triple]} "
                       f"and {n}); the first is kept")  # fmt: skip
            else:
                seen[triple] = n
        if why is not None:
            stored.rejected.append(Rejected(n, key, *why))
        else:
            good.append(rule)
    stored.rejected.sort(key=lambda r: r.row)
    with conn.transaction():
        for rule in good:
            inserted = conn.execute(
                """
                INSERT INTO responsibility_rules (category_code, jurisdiction_code, asset_owner,
                    unit_code, note, dataset)
                VALUES (%(category_code)s, %(jurisdiction_code)s, %(asset_owner)s,
                    %(unit_code)s, %(note)s, %(dataset)s)
                ON CONFLICT ON CONSTRAINT uq_responsibility_rules_rule
                DO UPDATE SET unit_code = EXCLUDED.unit_code,
                    note = EXCLUDED.note, dataset = EXCLUDED.dataset, updated_at = now()
                RETURNING (xmax = 0)
                """,
                asdict(rule),
            ).fetchone()[0]  # type: ignore[index]
            if inserted:
                stored.inserted += 1
            else:
                stored.updated += 1
    return stored


def _key(values: Any) -> str:
    return key_of(values, "category_code")


_SELECT = """
    SELECT r.id, r.category_code, c.name AS category_name, r.jurisdiction_code,
           j.name AS jurisdiction_name, j.level AS jurisdiction_level, r.asset_owner,
           r.unit_code, u.name AS unit_name, r.note, r.dataset
    FROM responsibility_rules r
    JOIN incident_categories c ON c.code = r.category_code
    JOIN jurisdictions j ON j.code = r.jurisdiction_code
    JOIN units u ON u.code = r.unit_code
"""


def list_rules(
    conn: psycopg.Connection,
    *,
    category: str | None = None,
    jurisdiction: str | None = None,
    unit: str | None = None,
    limit: int = 1000,
    offset: int = 0,
) -> list[dict[str, Any]]:
    """Rules, by category, jurisdiction and id; each filter matches a code exactly (the
    category's filter takes the rules of the categories under it too)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInput(f"limit must be from 1 to {MAX_PAGE:,}", option="limit")
    if not 0 <= offset < 2**63:
        raise InvalidInput("offset must be 0 or more (and fit in 64 bits)", option="offset")
    for name, value in (("category", category), ("jurisdiction", jurisdiction), ("unit", unit)):
        if value is not None and "\x00" in value:
            raise InvalidInput(f"{name} holds a NUL character", option=name)
    where = []
    params: dict[str, Any] = {"limit": limit, "offset": offset}
    if category is not None:
        where.append(
            """r.category_code IN (
                WITH RECURSIVE down(code, depth) AS (
                    SELECT %(category)s::text, 0
                    UNION ALL SELECT c2.code, down.depth + 1 FROM incident_categories c2
                    JOIN down ON c2.parent_code = down.code WHERE down.depth < %(max_depth)s
                ) SELECT code FROM down)"""
        )
        params["category"] = category
        params["max_depth"] = MAX_DEPTH
    if jurisdiction is not None:
        where.append("r.jurisdiction_code = %(jurisdiction)s")
        params["jurisdiction"] = jurisdiction
    if unit is not None:
        where.append("(r.unit_code = %(unit)s OR r.asset_owner = %(unit)s)")
        params["unit"] = unit
    query = (
        _SELECT
        + (" WHERE " + " AND ".join(where) if where else "")
        + (
            " ORDER BY r.category_code, r.jurisdiction_code, r.asset_owner NULLS FIRST, r.id"
            " LIMIT %(limit)s OFFSET %(offset)s"
        )
    )
    with conn.cursor(row_factory=dict_row) as cur:
        return list(cur.execute(query, params))  # type: ignore[call-overload]


def get_rule(conn: psycopg.Connection, rule_id: int) -> dict[str, Any]:
    """The rule with that id; NotFound otherwise."""
    if 0 < rule_id < 2**63:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_SELECT + " WHERE r.id = %s", (rule_id,)).fetchone()
        if row is not None:
            return row
    raise NotFound(f"no responsibility rule {rule_id}")


def add_rule(conn: psycopg.Connection, values: Mapping[str, Any]) -> dict[str, Any]:
    """Add one rule (the API's POST): InvalidInput naming the field that is wrong, Conflict
    when a rule for the same category, jurisdiction and owner exists (naming its id)."""
    try:
        rule = parse(values, dataset=str(values.get("dataset") or "api"))
    except RowError as exc:
        raise InvalidInput(str(exc), option=exc.column) from None
    for column, table, code in (("category_code", "categories", rule.category_code),
                                ("jurisdiction_code", "jurisdictions", rule.jurisdiction_code),
                                ("unit_code", "units", rule.unit_code),
                                ("asset_owner", "units", rule.asset_owner)):  # fmt: skip
        if code is not None and not _known(conn, table, {code}):
            raise InvalidInput(f"{column} {code!r} is not one of the {table} stored",
                               option=column)  # fmt: skip
    row = conn.execute(
        "SELECT id FROM responsibility_rules WHERE category_code = %s"
        " AND jurisdiction_code = %s AND asset_owner IS NOT DISTINCT FROM %s",
        (rule.category_code, rule.jurisdiction_code, rule.asset_owner),
    ).fetchone()
    if row is not None:
        raise Conflict(f"rule {row[0]} is already the rule for this category, jurisdiction and "
                       "asset owner; delete it first, or import the list to change it")  # fmt: skip
    stored = store(conn, [asdict(rule)], dataset=rule.dataset)
    stored.raise_first()
    found = list_rules(conn, category=rule.category_code, jurisdiction=rule.jurisdiction_code)
    return next(r for r in found if r["asset_owner"] == rule.asset_owner
                and r["category_code"] == rule.category_code)  # fmt: skip


def delete_rule(conn: psycopg.Connection, rule_id: int) -> None:
    """Delete a rule; NotFound for an unknown id."""
    get_rule(conn, rule_id)
    conn.execute("DELETE FROM responsibility_rules WHERE id = %s", (rule_id,))


@dataclass(frozen=True)
class Candidate:
    """A rule that could apply to a report, with how specific it is, in words too."""

    id: int
    category_code: str
    category_name: str
    category_depth: int  # 0: the report's own category; 1: its parent …
    jurisdiction_code: str
    jurisdiction_name: str
    jurisdiction_level: str
    jurisdiction_depth: int  # levels below the root of the jurisdiction tree
    asset_owner: str | None
    unit_code: str
    unit_name: str
    note: str
    owner_matched: bool  # the rule's asset_owner owns one of the report's assets

    @property
    def owner_rule(self) -> bool:
        """Whether the rule answers only for assets of one owner."""
        return self.asset_owner is not None

    def reason(self) -> str:
        """Why the rule applies, as a dispatcher reads it."""
        category = (
            f"category {self.category_name} ({self.category_code})"
            if self.category_depth == 0
            else f"category {self.category_name} ({self.category_code}), {self.category_depth} "
            f"level{'s' if self.category_depth > 1 else ''} above the report's"
        )
        place = f"{self.jurisdiction_level} {self.jurisdiction_name} ({self.jurisdiction_code})"
        owner = (
            f", for assets owned by {self.asset_owner}"
            + (" (the nearest attached asset is)" if self.owner_matched else "")
            if self.asset_owner
            else ""
        )
        return f"rule {self.id}: {category} in {place}{owner} goes to {self.unit_name} ({self.unit_code})"

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON answers, with the reason."""
        return {**asdict(self), "owner_rule": self.owner_rule, "reason": self.reason()}


# For each report (numbered ``n`` from 1) of one intake, in one statement: the category's
# ancestors, the walk from each of the report's places to the root (a place's depth: the
# steps from it to the root, the walk's from its start less those from the start to it),
# each (category, place) pair looked up in the rules' key. Every step is an index lookup
# (OFFSET 0: not flattened, the planner's guesses of these rows are far off): the rows a
# report touches are few, the tables are not (a large city's 15,000 jurisdictions and
# 6,000 units were hashed whole on every report).
_CANDIDATES = """
    WITH RECURSIVE asked(n, category) AS (
        SELECT n, category FROM unnest(%(categories)s::text[]) WITH ORDINALITY AS a(category, n)
    ),
    cat(n, code, depth) AS (
        SELECT asked.n, c.code, 0 FROM asked
        CROSS JOIN LATERAL (SELECT code FROM incident_categories
                            WHERE code = asked.category OFFSET 0) c
        UNION ALL
        SELECT cat.n, c.parent_code, cat.depth + 1 FROM cat
        CROSS JOIN LATERAL (SELECT parent_code FROM incident_categories
                            WHERE code = cat.code OFFSET 0) c
        WHERE c.parent_code IS NOT NULL AND cat.depth < %(max_depth)s
    ),
    walk(n, start, code, parent, steps) AS (
        SELECT p.n, j.code, j.code, j.parent_code, 0
        FROM unnest(%(numbers)s::int[], %(places)s::text[]) AS p(n, code)
        CROSS JOIN LATERAL (SELECT code, parent_code FROM jurisdictions
                            WHERE code = p.code OFFSET 0) j
        UNION ALL
        SELECT walk.n, walk.start, j.code, j.parent_code, walk.steps + 1 FROM walk
        CROSS JOIN LATERAL (SELECT code, parent_code FROM jurisdictions
                            WHERE code = walk.parent OFFSET 0) j
        WHERE walk.steps < %(max_depth)s
    ),
    depth AS (
        SELECT walk.n, walk.code, max(total.steps - walk.steps) AS depth FROM walk
        JOIN (SELECT n, start, max(steps) AS steps FROM walk GROUP BY n, start) total
          ON total.n = walk.n AND total.start = walk.start
        GROUP BY walk.n, walk.code
    ),
    found AS MATERIALIZED (
        SELECT cat.n, r.id, r.category_code, cat.depth AS category_depth, r.jurisdiction_code,
               depth.depth AS jurisdiction_depth, r.asset_owner, r.unit_code, r.note
        FROM cat JOIN depth ON depth.n = cat.n
        CROSS JOIN LATERAL (
            SELECT * FROM responsibility_rules r
            WHERE r.category_code = cat.code AND r.jurisdiction_code = depth.code
            OFFSET 0
        ) r
    )
    SELECT f.n, f.id, f.category_code, c.name AS category_name, f.category_depth,
           f.jurisdiction_code, j.name AS jurisdiction_name, j.level AS jurisdiction_level,
           f.jurisdiction_depth, f.asset_owner, f.unit_code, u.name AS unit_name, f.note
    FROM found f
    CROSS JOIN LATERAL (SELECT name FROM incident_categories
                        WHERE code = f.category_code OFFSET 0) c
    CROSS JOIN LATERAL (SELECT name, level FROM jurisdictions
                        WHERE code = f.jurisdiction_code OFFSET 0) j
    CROSS JOIN LATERAL (SELECT name FROM units WHERE code = f.unit_code OFFSET 0) u
"""


def send_candidates_many(
    conn: psycopg.Connection, asked: Sequence[tuple[str, Sequence[str]]]
) -> psycopg.Cursor[dict[str, Any]]:
    """``send_candidates`` for several reports at once (each its category code and
    jurisdiction codes), in one statement: its cursor, whose rows carry ``n``, the
    report's place in ``asked`` from 1 (``rank_candidates`` takes one report's rows)."""
    numbers: list[int] = []
    places: list[str] = []
    for n, (_, codes) in enumerate(asked, start=1):
        for code in codes:
            if isinstance(code, str) and "\x00" not in code:
                numbers.append(n)
                places.append(code)
    cur = conn.cursor(row_factory=dict_row)
    cur.execute(_CANDIDATES, {"categories": [c for c, _ in asked], "numbers": numbers,
                                   "places": places, "max_depth": MAX_DEPTH})  # fmt: skip
    return cur


def candidate_rules(
    conn: psycopg.Connection,
    category_code: str,
    jurisdiction_codes: Sequence[str],
    *,
    asset_owners: Sequence[str] | None = None,
) -> list[Candidate]:
    """The rules that could apply to a report of ``category_code`` in ``jurisdiction_codes``
    (its jurisdiction chain, at any levels present: the jurisdictions enclosing them count
    too), first the one dispatch takes.

    Order: rules whose ``asset_owner`` owns one of ``asset_owners`` (the owners of the
    report's attached assets, nearest first), in that order; then the others, the most
    specific category first (the report's own, then its parent …), then the most specific
    jurisdiction (deepest in the tree, whatever levels it skips), then by id. Rules for an
    owner not among ``asset_owners`` cannot apply and are left out; with ``asset_owners``
    None (nothing known of the assets) every rule is listed, owner rules marked and last.
    NotFound for an unknown category; unknown jurisdiction codes match nothing."""
    get_category(conn, category_code)
    return ranked_candidates(conn, category_code, jurisdiction_codes, asset_owners=asset_owners)


def ranked_candidates(
    conn: psycopg.Connection,
    category_code: str,
    jurisdiction_codes: Sequence[str],
    *,
    asset_owners: Sequence[str] | None = None,
) -> list[Candidate]:
    """``candidate_rules`` for a category the caller has read already (intake has): one
    statement, no second read of the category; an unknown code matches nothing."""
    with send_candidates(conn, category_code, jurisdiction_codes) as cur:
        return rank_candidates(cur.fetchall(), asset_owners)


def send_candidates(
    conn: psycopg.Connection, category_code: str, jurisdiction_codes: Sequence[str]
) -> psycopg.Cursor[dict[str, Any]]:
    """``ranked_candidates``' statement, sent: its cursor, whose rows ``rank_candidates``
    orders."""
    return send_candidates_many(conn, [(category_code, jurisdiction_codes)])


def rank_candidates(
    rows: Sequence[dict[str, Any]], asset_owners: Sequence[str] | None = None
) -> list[Candidate]:
    """``send_candidates``' rows as ``ranked_candidates`` answers them: first the one
    dispatch takes."""
    owners = list(asset_owners) if asset_owners is not None else None
    candidates = []
    for row in rows:
        row = {k: v for k, v in row.items() if k != "n"}
        owner = row["asset_owner"]
        if owner is not None and owners is not None and owner not in owners:
            continue
        candidates.append(Candidate(**row, owner_matched=owner is not None and owners is not None))

    def precedence(c: Candidate) -> tuple[int, int, int, int, int]:
        rank = owners.index(c.asset_owner) if c.owner_matched and owners else -1  # type: ignore[arg-type]
        return (0 if c.owner_matched else 1 if not c.owner_rule else 2, rank,
                c.category_depth, -c.jurisdiction_depth, c.id)  # fmt: skip

    return sorted(candidates, key=precedence)
