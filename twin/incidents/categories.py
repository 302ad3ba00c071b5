"""Incident categories (事件/部件 classes): a tree, each with the asset layers it concerns,
the radius to attach them, its SLA, priority and the window for fusing duplicates.

Rows come from a file (``layers.incidents``), the API or the demo as plain values (text
or JSON); each is checked here, the tree as a whole too (every parent known, no cycle),
and a row that cannot be used is rejected naming its column, the others stored.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from twin import changes, registry
from twin.errors import Conflict, InvalidInput, NotFound
from twin.incidents.rows import Rejected, RowError, Stored, blank, key_of, positive, text, whole
from twin.schema import PIPE_NETWORKS

COLUMNS = ("code", "name", "parent_code", "asset_layers", "attach_radius_m", "response_hours",
           "resolve_hours", "priority", "fusion_radius_m", "fusion_hours")  # fmt: skip
# Ten years: a due time or a fusion window the calendar can always add and subtract.
MAX_HOURS = 87_600.0
REQUIRED = ("code", "name", "attach_radius_m", "response_hours", "resolve_hours")
DEFAULT_FUSION_RADIUS_M = 50.0
DEFAULT_FUSION_HOURS = 24.0
DEFAULT_PRIORITY = 3
PRIORITIES = (1, 5)  # 1 the most urgent (特急), 5 the least
MAX_DEPTH = 20  # a deeper tree is a mistake (and bounds every walk up it)
# Layers whose features are not assets: the places and the units themselves.
NOT_ASSETS = frozenset({"jurisdictions", "units", "incidents"})
NETWORK_LAYERS = ("pipes", "pipe_nodes")  # the layers with a network column
_LIST_SEPARATORS = re.compile(r"[,，、;；|\s]+")
_NOT_IN_CODES = re.compile(r"[\s,，/\\?#%]")


@dataclass(frozen=True)
class Category:
    """A category as stored."""

    code: str
    name: str
    parent_code: str | None
    asset_layers: tuple[str, ...]
    attach_radius_m: float
    response_hours: float
    resolve_hours: float
    priority: int = DEFAULT_PRIORITY
    fusion_radius_m: float = DEFAULT_FUSION_RADIUS_M
    fusion_hours: float = DEFAULT_FUSION_HOURS
    dataset: str = ""

    def as_dict(self) -> dict[str, Any]:
        """Plain data for JSON answers."""
        return {**asdict(self), "asset_layers": list(self.asset_layers)}


def parse(conn: psycopg.Connection, values: Mapping[str, Any], *, dataset: str = "") -> Category:
    """A category from a row's values (text or JSON values); RowError naming the column for
    the first that cannot be used. Asset layers are resolved by the registry."""
    code = text("code", values.get("code"), required=True, code=True)
    parent = text("parent_code", values.get("parent_code"), code=True)
    for column, value in (("code", code), ("parent_code", parent)):
        # A code is a word in URLs and in Open311's comma-separated service_code lists.
        if value is not None and _NOT_IN_CODES.search(value):
            raise RowError(column, f"{column} {value[:60]!r} may not hold spaces, commas or "
                           "slashes")  # fmt: skip
    response = positive("response_hours", values.get("response_hours"), most=MAX_HOURS)
    resolve = positive("resolve_hours", values.get("resolve_hours"), most=MAX_HOURS)
    if response > resolve:
        raise RowError("response_hours", f"response_hours {response:g} is more than "
                       f"resolve_hours {resolve:g}: a unit answers before it must have "
                       "resolved")  # fmt: skip
    return Category(
        code=code,  # type: ignore[arg-type]
        name=text("name", values.get("name"), required=True),  # type: ignore[arg-type]
        parent_code=parent,
        asset_layers=asset_layers(conn, values.get("asset_layers")),
        attach_radius_m=positive("attach_radius_m", values.get("attach_radius_m")),
        response_hours=response,
        resolve_hours=resolve,
        priority=whole(
            "priority",
            values.get("priority"),
            low=PRIORITIES[0],
            high=PRIORITIES[1],
            default=DEFAULT_PRIORITY,
        ),
        fusion_radius_m=positive(
            "fusion_radius_m", values.get("fusion_radius_m"), default=DEFAULT_FUSION_RADIUS_M
        ),
        fusion_hours=positive(
            "fusion_hours",
            values.get("fusion_hours"),
            default=DEFAULT_FUSION_HOURS,
            most=MAX_HOURS,
        ),
        dataset=dataset,
    )


def asset_layers(conn: psycopg.Connection, value: Any) -> tuple[str, ...]:
    """The layers named (a list, or text listing them with commas), each one the registry
    knows and that holds assets, a pipe layer perhaps held to one network (``pipes:water``:
    a water main's burst concerns water mains, not the power cable beside it); RowError
    naming the unknown ones and the layers there are."""
    if blank(value):
        return ()
    if isinstance(value, str):
        names = [n for n in _LIST_SEPARATORS.split(value.strip()) if n]
    elif isinstance(value, list) and all(isinstance(n, str) for n in value):
        names = [n.strip() for n in value if n.strip()]
    else:
        raise RowError("asset_layers", "asset_layers must be a list of layer names or text "
                       "listing them with commas")  # fmt: skip
    unknown = []
    for entry in dict.fromkeys(names):
        name, _, network = entry.partition(":")
        if network and (name not in NETWORK_LAYERS or network not in PIPE_NETWORKS):
            raise RowError(
                "asset_layers",
                f"asset_layers {entry[:60]!r}: only {' and '.join(NETWORK_LAYERS)} are held to "
                f"a network, one of {', '.join(PIPE_NETWORKS)} (e.g. pipes:water)",
            )
        if name in NOT_ASSETS:
            unknown.append(name)
            continue
        try:
            layer = registry.resolve(conn, name)
        except NotFound:
            unknown.append(name.replace("\x00", "")[:40])
            continue
        if not layer.has_features:
            unknown.append(name)
    if unknown:
        choices = [n for n in registry.BUILTIN if n not in NOT_ASSETS]
        raise RowError(
            "asset_layers",
            f"asset_layers names no asset layer {', '.join(repr(n) for n in unknown)}; choose "
            f"from {', '.join(choices)}, or a scene",
        )
    return tuple(dict.fromkeys(names))


def attach_layers(category: Category) -> tuple[list[str], dict[str, tuple[str, ...]]]:
    """The layers a category's assets are attached from, and for those held to networks,
    which (``pipes:water`` → ``{"pipes": ("water",)}``)."""
    layers: dict[str, None] = {}
    networks: dict[str, list[str]] = {}
    for entry in category.asset_layers:
        name, _, network = entry.partition(":")
        layers[name] = None
        if network:
            networks.setdefault(name, []).append(network)
    # A layer named both bare and with a network is the whole layer.
    bare = {e for e in category.asset_layers if ":" not in e}
    return list(layers), {n: tuple(v) for n, v in networks.items() if n not in bare}


_SELECT = """
    SELECT code, name, parent_code, asset_layers, attach_radius_m, response_hours,
           resolve_hours, priority, fusion_radius_m, fusion_hours, dataset
    FROM incident_categories
"""


def _category(row: dict[str, Any]) -> Category:
    return Category(**{**row, "asset_layers": tuple(row["asset_layers"] or ())})


def list_categories(conn: psycopg.Connection) -> list[Category]:
    """Every category, the tree depth first (a parent before its children), by code."""
    with conn.cursor(row_factory=dict_row) as cur:
        rows = [_category(r) for r in cur.execute(_SELECT + " ORDER BY code")]
    children: dict[str | None, list[Category]] = {}
    codes = {c.code for c in rows}
    for c in rows:
        children.setdefault(c.parent_code if c.parent_code in codes else None, []).append(c)
    ordered: list[Category] = []
    stack = list(reversed(children.get(None, [])))
    while stack:
        c = stack.pop()
        ordered.append(c)
        stack.extend(reversed(children.get(c.code, [])))
    return ordered


def get_category(conn: psycopg.Connection, code: str) -> Category:
    """The category of that code; NotFound otherwise."""
    if "\x00" not in code:
        with conn.cursor(row_factory=dict_row) as cur:
            row = cur.execute(_SELECT + " WHERE code = %s", (code,)).fetchone()
        if row is not None:
            return _category(row)
    raise NotFound(f"no category {code.replace(chr(0), '')[:60]!r}")


def ancestors(conn: psycopg.Connection, code: str) -> list[Category]:
    """The category's parent, its parent's parent …, up to its root (nearest first);
    NotFound for an unknown code."""
    get_category(conn, code)
    with conn.cursor(row_factory=dict_row) as cur:
        rows = cur.execute(
            """
            WITH RECURSIVE up(code, depth) AS (
                SELECT parent_code, 1 FROM incident_categories WHERE code = %s
                UNION ALL
                SELECT c.parent_code, up.depth + 1 FROM up
                JOIN incident_categories c ON c.code = up.code
                WHERE up.depth < %s
            )
            SELECT c.code, c.name, c.parent_code, c.asset_layers, c.attach_radius_m,
                   c.response_hours, c.resolve_hours, c.priority, c.fusion_radius_m,
                   c.fusion_hours, c.dataset
            FROM up JOIN incident_categories c ON c.code = up.code ORDER BY up.depth
            """,
            (code, MAX_DEPTH),
        ).fetchall()
    return [_category(r) for r in rows]


def descendants(conn: psycopg.Connection, code: str) -> list[Category]:
    """Every category under this one (children, theirs …), depth first; NotFound for an
    unknown code."""
    get_category(conn, code)
    everything = list_categories(conn)
    below: set[str] = {code}
    found = []
    for c in everything:  # depth first: a parent comes before its children
        if c.parent_code in below:
            below.add(c.code)
            found.append(c)
    return found


def store(
    conn: psycopg.Connection,
    rows: Sequence[Mapping[str, Any]],
    *,
    dataset: str = "",
    replace: bool = False,
) -> Stored:
    """Check and upsert categories by code, in one transaction: each row that cannot be
    used (a value, a duplicate code, a parent neither in the rows nor stored, a cycle) is
    rejected naming its row and column, the others stored, parents first.

    ``replace``: the categories of ``dataset`` not in the rows are deleted too (Conflict
    when rules or other categories still use them)."""
    stored = Stored()
    parsed: dict[str, tuple[int, Category]] = {}
    refused: dict[str, int] = {}  # code -> row, of rows whose values cannot be used
    for n, values in enumerate(rows, start=1):
        try:
            category = parse(conn, values, dataset=dataset)
        except RowError as exc:
            stored.rejected.append(Rejected(n, key_of(values, "code"), exc.column, str(exc)))
            given = values.get("code")
            if isinstance(given, str) and given.strip():
                refused.setdefault(given.strip(), n)
            continue
        if category.code in parsed:
            first = parsed[category.code][0]
            stored.rejected.append(Rejected(
                n, f"code {category.code!r}", "code",
                f"code {category.code!r} is given twice (rows {first} and {n}); the first is kept",
            ))  # fmt: skip
            continue
        parsed[category.code] = (n, category)
    existing = {
        code: parent
        for code, parent in conn.execute("SELECT code, parent_code FROM incident_categories")
    }
    order = _tree_order(parsed, existing, stored, refused)
    with conn.transaction():
        priorities = dict(conn.execute(
            "SELECT code, priority FROM incident_categories WHERE code = ANY(%s)",
            ([c.code for c in order],),
        ).fetchall())  # fmt: skip
        for category in order:
            inserted = conn.execute(
                """
                INSERT INTO incident_categories (code, name, parent_code, asset_layers,
                    attach_radius_m, response_hours, resolve_hours, priority,
                    fusion_radius_m, fusion_hours, dataset)
                VALUES (%(code)s, %(name)s, %(parent_code)s, %(asset_layers)s,
                    %(attach_radius_m)s, %(response_hours)s, %(resolve_hours)s, %(priority)s,
                    %(fusion_radius_m)s, %(fusion_hours)s, %(dataset)s)
                ON CONFLICT (code) DO UPDATE SET name = EXCLUDED.name,
                    parent_code = EXCLUDED.parent_code, asset_layers = EXCLUDED.asset_layers,
                    attach_radius_m = EXCLUDED.attach_radius_m,
                    response_hours = EXCLUDED.response_hours,
                    resolve_hours = EXCLUDED.resolve_hours, priority = EXCLUDED.priority,
                    fusion_radius_m = EXCLUDED.fusion_radius_m,
                    fusion_hours = EXCLUDED.fusion_hours, dataset = EXCLUDED.dataset,
                    updated_at = now()
                RETURNING (xmax = 0)
                """,
                {**asdict(category), "asset_layers": list(category.asset_layers)},
            ).fetchone()[0]  # type: ignore[index]
            if inserted:
                stored.inserted += 1
            else:
                stored.updated += 1
        # A category's priority is in its incidents' tiles: a change of them, for the
        # tile cache (twin.changes), under the incidents of the categories it moved.
        moved = [c.code for c in order if c.code in priorities and priorities[c.code] != c.priority]
        box = moved and changes.box_of(
            conn, sql.SQL("SELECT geom FROM incidents WHERE category_code = ANY(%s)"), (moved,)
        )
        if box:
            changes.record(conn, "incidents", "edit", box=box, features=0, table=None)
        if replace:
            gone = [
                code for (code,) in conn.execute(
                    "SELECT code FROM incident_categories WHERE dataset = %s AND code <> ALL(%s)",
                    (dataset, [c.code for c in order]),
                )
            ]  # fmt: skip
            _delete(conn, gone)
            stored.deleted = len(gone)
    return stored


def _tree_order(
    parsed: dict[str, tuple[int, Category]],
    existing: dict[str, str | None],
    stored: Stored,
    refused: dict[str, int],
) -> list[Category]:
    """The rows that make a tree with what is stored, parents first; the others rejected
    (unknown parent, a cycle, a parent that was itself rejected)."""
    parent_of = dict(existing)
    parent_of.update({code: c.parent_code for code, (_, c) in parsed.items()})
    bad: dict[str, tuple[str, str]] = {}  # code -> (column, reason)
    for code, (_, category) in parsed.items():
        parent = category.parent_code
        if parent is not None and parent not in parent_of and parent in refused:
            bad[code] = (
                "parent_code",
                f"its parent {parent!r} was rejected (row {refused[parent]})",
            )
            continue
        if parent is not None and parent not in parent_of:
            bad[code] = ("parent_code", f"parent_code {parent!r} is neither in the file nor "
                         "among the categories stored")  # fmt: skip
            continue
        path = [code]
        seen = {code}
        step = parent
        while step is not None and step in parent_of:
            if step in seen:
                cycle = " > ".join([*path[path.index(step) :], step])
                bad[code] = ("parent_code", f"parent_code {parent!r} makes a cycle ({cycle})")
                break
            if len(path) > MAX_DEPTH:
                bad[code] = ("parent_code", f"the tree above {code!r} is deeper than "
                             f"{MAX_DEPTH} levels")  # fmt: skip
                break
            seen.add(step)
            path.append(step)
            step = parent_of[step]
    # A row under a rejected one cannot be stored either (the parent would be missing, or
    # not the one the file meant): rejected in turn, until none is left.
    changed = True
    while changed:
        changed = False
        for code, (_, category) in parsed.items():
            parent = category.parent_code
            if code not in bad and parent in bad and parent in parsed:
                bad[code] = ("parent_code", f"its parent {parent!r} was rejected")
                changed = True
    for code, (column, reason) in bad.items():
        stored.rejected.append(Rejected(parsed[code][0], f"code {code!r}", column, reason))
    stored.rejected.sort(key=lambda r: r.row)
    good = {code: c for code, (_, c) in parsed.items() if code not in bad}
    order: list[Category] = []
    done: set[str] = set()

    def visit(code: str) -> None:
        if code in done:
            return
        done.add(code)
        parent = good[code].parent_code
        if parent in good:
            visit(parent)  # type: ignore[arg-type]
        order.append(good[code])

    for code in good:
        visit(code)
    return order


def put(conn: psycopg.Connection, code: str, values: Mapping[str, Any]) -> tuple[Category, bool]:
    """Create or replace one category (the API's PUT): InvalidInput naming the field that
    cannot be used, or a parent unknown or making a cycle. Returns it and whether it is new."""
    given = values.get("code")
    if given is not None and given != code:
        raise InvalidInput(f"code {str(given)[:60]!r} in the body differs from {code[:60]!r} in "
                           "the path; leave it out, or give the same", option="code")  # fmt: skip
    stored = store(conn, [{**values, "code": code}], dataset=str(values.get("dataset") or "api"))
    stored.raise_first()
    return get_category(conn, code), stored.inserted == 1


def delete(conn: psycopg.Connection, code: str) -> None:
    """Delete a category; NotFound for an unknown code, Conflict while responsibility rules
    or other categories use it."""
    get_category(conn, code)
    with conn.transaction():
        _delete(conn, [code])


def _delete(conn: psycopg.Connection, codes: Iterable[str]) -> None:
    codes = list(codes)
    if not codes:
        return
    rules = conn.execute(
        "SELECT category_code, count(*) FROM responsibility_rules WHERE category_code = ANY(%s)"
        " GROUP BY 1 ORDER BY 1",
        (codes,),
    ).fetchall()
    if rules:
        code, count = rules[0]
        raise Conflict(f"category {code!r} is used by {count:,} responsibility rule(s); delete "
                       "or change those first")  # fmt: skip
    children = conn.execute(
        "SELECT parent_code, string_agg(code, ', ' ORDER BY code) FROM incident_categories"
        " WHERE parent_code = ANY(%s) AND code <> ALL(%s) GROUP BY 1 ORDER BY 1",
        (codes, codes),
    ).fetchall()
    if children:
        code, under = children[0]
        raise Conflict(f"category {code!r} has categories under it ({under[:200]}); delete or "
                       "move those first")  # fmt: skip
    conn.execute("DELETE FROM incident_categories WHERE code = ANY(%s)", (codes,))
