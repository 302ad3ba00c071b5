"""Dispatch (派单): which unit a report goes to, and why, in words a dispatcher reads.

The responsibility list decides (``responsibilities.candidate_rules``, in its order of
precedence: the rule for the owner of the nearest attached asset, then the most specific
category, then the deepest jurisdiction). Where no rule applies, the report is escalated
to the centre of the nearest enclosing jurisdiction that has one, from the report's
lowest level up (街道吹哨、部门报到). A report outside every jurisdiction waits for a
dispatcher.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import psycopg

from twin.incidents.categories import Category
from twin.incidents.responsibilities import Candidate, rank_candidates

HOW = ("rule", "owner", "escalation", "manual", "none")
# An asset's layer as a dispatcher names it in a reason.
ASSET_NOUNS = {
    "pipes": "pipe", "pipe_nodes": "pipe node", "buildings": "building",
    "public_spaces": "public space", "sensors": "sensor",
}  # fmt: skip


@dataclass(frozen=True)
class Decision:
    """Where a report goes: the unit (None: it waits for a dispatcher), how it was chosen
    (rule, owner, escalation, none; manual for a dispatcher's), the rule's id, and why."""

    unit_code: str | None
    unit_name: str | None
    how: str
    reason: str
    rule: int | None = None
    escalated: bool = False
    outside: bool = False

    @property
    def status(self) -> str:
        """The status intake gives the report: dispatched when a unit has it."""
        return "dispatched" if self.unit_code is not None else "reported"

    def as_dict(self) -> dict[str, Any]:
        """What the incident keeps of the decision (its ``dispatch``)."""
        return {"rule": self.rule, "how": self.how, "reason": self.reason}

    def plain(self) -> dict[str, Any]:
        """Every field, for tests and notebooks."""
        return asdict(self)


def _asset_words(asset: dict[str, Any]) -> str:
    noun = ASSET_NOUNS.get(asset["layer"], f"{asset['layer']} feature")
    name = asset.get("source_id") or f"#{asset['id']}"
    return f"{noun} {name}, {asset['distance_m']:g} m"


def _place(jurisdictions: Sequence[dict[str, Any]], code: str) -> str:
    found = next((j for j in jurisdictions if j["code"] == code), None)
    return found["name"] if found else code


def _rule_reason(category: Category, chosen: Candidate, jurisdictions: Sequence[dict[str, Any]],
                 assets: Sequence[dict[str, Any]]) -> tuple[str, str]:  # fmt: skip
    """How (owner or rule) and the reason, e.g. "rule #12: 管道爆裂 in 长寿路街道 → 区自来水
    公司 (owner of the nearest pipe P-123, 6 m)"."""
    covers = (
        "" if chosen.category_depth == 0
        else f" (covers {category.name}, {chosen.category_depth} level"
        f"{'s' if chosen.category_depth > 1 else ''} down)"
    )  # fmt: skip
    head = (
        f"rule #{chosen.id}: {chosen.category_name}{covers} in "
        f"{_place(jurisdictions, chosen.jurisdiction_code)} → {chosen.unit_name}"
    )
    if chosen.owner_matched:
        owned = next((a for a in assets if a.get("owner_unit") == chosen.asset_owner), None)
        what = f"the nearest {_asset_words(owned)}" if owned else "an attached asset"
        return "owner", f"{head} (owner {chosen.asset_owner} of {what})"
    deepest = jurisdictions[-1]["name"] if jurisdictions else ""
    where = (
        "" if chosen.jurisdiction_code == (jurisdictions[-1]["code"] if jurisdictions else None)
        else f"; the report lies in {deepest}, which has no rule of its own"
    )  # fmt: skip
    return "rule", f"{head} (the most specific rule for this category and place{where})"


# The centres of jurisdictions, from the lowest level up (``centre`` reads them).
CENTRES = ("SELECT code, name, jurisdiction_code FROM units"
           " WHERE kind = 'centre' AND jurisdiction_code = ANY(%s) ORDER BY code")  # fmt: skip


def _centre_of(rows: Sequence[tuple[str, str, str]], jurisdictions: Sequence[dict[str, Any]]
               ) -> tuple[str, str, str] | None:  # fmt: skip
    """Of ``CENTRES``' rows (read for these jurisdictions or more), the centre of the
    nearest enclosing jurisdiction that has one, from the lowest level up: (code, name,
    jurisdiction code)."""
    for place in reversed([j["code"] for j in jurisdictions]):  # the deepest first
        for code, name, where in rows:
            if where == place:
                return code, name, where
    return None


def centre(conn: psycopg.Connection, jurisdictions: Sequence[dict[str, Any]]
           ) -> tuple[str, str, str] | None:  # fmt: skip
    """The centre (a unit of kind centre) of the nearest enclosing jurisdiction that has
    one, from the lowest level up: (code, name, jurisdiction code)."""
    rows = conn.execute(CENTRES, ([j["code"] for j in jurisdictions],)).fetchall()
    return _centre_of(rows, jurisdictions)


def decide(
    category: Category,
    jurisdictions: Sequence[dict[str, Any]],
    assets: Sequence[dict[str, Any]],
    rows: Sequence[dict[str, Any]],
    centres: Sequence[tuple[str, str, str]],
) -> Decision:
    """The decision for a report of ``category`` in ``jurisdictions`` (its chain, highest
    first) with ``assets`` attached (nearest first, each with ``owner_unit``), from what
    intake read for it ahead: the candidate rules' ``rows``
    (``responsibilities.send_candidates_many``', of this report) and ``centres``, the
    rows of ``CENTRES`` for its jurisdictions (or more)."""
    if not jurisdictions:
        return _outside()
    owners = list(dict.fromkeys(a["owner_unit"] for a in assets if a.get("owner_unit")))
    candidates = rank_candidates(rows, owners)
    if candidates:
        chosen = candidates[0]
        how, reason = _rule_reason(category, chosen, jurisdictions, assets)
        return Decision(chosen.unit_code, chosen.unit_name, how, reason, rule=chosen.id)
    return _escalate(category, jurisdictions, _centre_of(centres, jurisdictions))


def _outside() -> Decision:
    return Decision(
        None, None, "none", outside=True,
        reason="the report lies outside every jurisdiction: it waits for a dispatcher",
    )  # fmt: skip


def _escalate(category: Category, jurisdictions: Sequence[dict[str, Any]],
              centre: tuple[str, str, str] | None) -> Decision:  # fmt: skip
    """No rule applies: to ``centre``, or (none) to a dispatcher."""
    if centre is None:
        return Decision(
            None, None, "none",
            reason=f"no rule for {category.name} ({category.code}) in "
            f"{jurisdictions[-1]['name']}, and no centre there or above: it waits for a "
            "dispatcher",
        )  # fmt: skip
    code, name, where = centre
    return Decision(
        code, name, "escalation", escalated=True,
        reason=f"no rule for {category.name} ({category.code}) in {jurisdictions[-1]['name']}: "
        f"escalated to {name}, the centre of {_place(jurisdictions, where)} (街道吹哨)",
    )  # fmt: skip
