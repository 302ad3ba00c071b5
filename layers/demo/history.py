"""The demo city's history of incidents: about three months of reports from every channel,
taken and worked through the closed loop as the product would have recorded them.

``plan_history`` is pure and seeded: the reports (when, what, where, by which channel, in
whose words) and what is to happen to each (closed on time, late, left open past its due
time, sent back, reassigned, reopened, cancelled, marked duplicate, not our duty), with
the daily and weekly rhythm of a city (more by day, fewer at night, grid inspectors on
their rounds in working hours), categories weighted as 12345 practice finds them
(layers/demo/history.csv), a few clusters (a street of 占道经营 in the evenings, a storm's
flooding, a site that works at night) and a few reports from outside the district.

``load_history`` replays the plan in time order through the core's own paths: every
report through ``intake.report`` (attach, fusion, dispatch), every step through
``loop.transition`` and the SLA sweep (``loop.sweep``) every hour of the three months, each
at its historical time. What the core decides (the unit, a fusion, an escalation) is the
core's; the plan only says what people do next, and a step the incident's state no
longer allows is skipped.

Demo incidents are marked by their idempotency key (``twin-demo:…``, never shown
publicly); ``remove_history`` deletes them and their timelines, and nothing else.
Reporters are fictional and look it: 某先生/某女士, phones 138-0000-xxxx, e-mail at
example.invalid.
"""

from __future__ import annotations

import csv
import heapq
import io
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from importlib import resources
from typing import Any

import numpy as np
import psycopg
import shapely

from layers.demo.generate import DemoCity
from twin import changes
from twin.incidents import intake, loop
from twin.schema import INCIDENT_CHANNELS

KEY_PREFIX = "twin-demo:"  # the idempotency key of every demo incident begins so
DAYS = 91
# Reports over the three months, per district of the demo's size (the large city has 49).
VOLUMES = {"small": 160, "default": 3000, "large": 12000}
LOCAL = timezone(timedelta(hours=8))
SWEEP_EVERY = timedelta(hours=1)
COMMIT_EVERY = 300  # steps: a long replay holds no lock for long, nor thousands at once
Progress = Callable[[str, int, int], None]
# Its progress counts the reports taken in, of the plan's: a total known from the start
# (the loop's steps are planned only as each report is taken in), reached at an even pace,
# since the replay runs in time order.
PROGRESS_STEP = "history of incidents"

# Reports per hour of the local day (relative), and per weekday (Monday first).
HOURS = np.array([0.15, 0.1, 0.07, 0.06, 0.07, 0.15, 0.4, 0.8, 1.2, 1.4, 1.4, 1.3,
                  1.1, 1.1, 1.2, 1.2, 1.1, 1.1, 1.0, 1.0, 0.9, 0.7, 0.45, 0.25])  # fmt: skip
WEEKDAYS = np.array([1.1, 1.05, 1.0, 1.0, 1.0, 0.85, 0.8])
WORK_HOURS = np.array([0.0] * 8 + [1.0] * 10 + [0.0] * 6)  # grid inspectors' rounds
CHANNEL_WEIGHTS = {"hotline_12345": 0.46, "grid_inspector": 0.26, "resident_photo": 0.16,
                   "sensor_alarm": 0.0, "camera_ai": 0.0, "external_system": 0.04}  # fmt: skip
# Where sensors or cameras see it themselves (their share of those categories' reports).
SENSED = {"SJ0403": 0.35, "SJ0411": 0.4, "SJ0402": 0.5, "SJ040101": 0.3, "SJ0405": 0.3,
          "SJ0604": 0.25, "BJ0103": 0.15, "BJ0102": 0.15, "BJ0116": 0.6, "BJ0603": 0.6,
          "SJ0607": 0.3, "SJ0608": 0.3}  # fmt: skip
SEEN = {"SJ0501": 0.25, "SJ0502": 0.2, "SJ0504": 0.35, "SJ0505": 0.3, "SJ0506": 0.3,
        "SJ0102": 0.15, "SJ0101": 0.1, "SJ0507": 0.2, "SJ0305": 0.2}  # fmt: skip
# What becomes of a report once a unit has it (the share of each path).
FATES = {"on_time": 0.64, "late": 0.1, "stalled": 0.04, "send_back": 0.05, "reassign": 0.05,
         "reopen": 0.04, "cancel": 0.03, "not_our_duty": 0.03}  # fmt: skip
ACTORS = {"hotline_12345": "12345热线受理员", "grid_inspector": "网格巡查员",
          "resident_photo": "随手拍", "sensor_alarm": "物联感知平台",
          "camera_ai": "视频AI识别", "external_system": "市级工单系统"}  # fmt: skip
DISPATCHER = "区城运中心派单员"
VERIFIER = "区城运中心核查员"
SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾萧田董潘袁蔡蒋余于杜叶程"
)


@dataclass(order=True)
class _Item:
    at: datetime
    order: int
    kind: str = field(compare=False)  # report, step, sweep
    index: int = field(compare=False, default=-1)  # the planned report
    step: dict[str, Any] = field(compare=False, default_factory=dict)


@dataclass
class PlannedReport:
    """One report of the plan and what people then do with it."""

    index: int
    at: datetime
    category: str
    channel: str
    lon: float
    lat: float
    description: str
    address: str
    reporter: dict[str, str]
    fate: str
    district: str  # the district it is in or nearest to (for a dispatcher's fallback)
    original: int | None = None  # a planned report it repeats (marked duplicate by hand)
    seed: int = 0


def _rows(name: str) -> list[dict[str, str]]:
    text = resources.files("layers.demo").joinpath(name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def _categories() -> dict[str, dict[str, Any]]:
    """The demo's leaf categories with their SLA hours, weight and anchor."""
    rows = _rows("categories.csv")
    parents = {r["parent_code"] for r in rows if r["parent_code"]}
    weights = {r["code"]: r for r in _rows("history.csv")}
    leaves = {}
    for r in rows:
        if r["code"] in parents:
            continue
        layers = [x for x in (r["asset_layers"] or "").split(",") if x]
        extra = weights.get(r["code"])
        leaves[r["code"]] = {
            "name": r["name"], "response": float(r["response_hours"]),
            "resolve": float(r["resolve_hours"]),
            "weight": float(extra["weight"]) if extra else 0.3,
            "anchor": extra["anchor"] if extra else (layers[0] if layers else "buildings"),
        }  # fmt: skip
    return leaves


# Words residents, inspectors and machines use, by the category's family (its parent).
DETAILS = {
    "SJ01": ["已经好几天了", "影响小区环境", "环卫保洁不及时", "周边居民意见很大"],
    "SJ02": ["电线杆和墙上贴满了小广告", "有人反复张贴办证刻章广告", "广告牌挡住了人行道",
             "影响市容"],
    "SJ03": ["晚上十点以后还在施工，噪音很大", "扬尘很大，窗户都不敢开", "渣土车撒漏一路",
             "围挡倒了一半", "路面挖开后一直没有恢复", "施工材料堆在路上"],
    "SJ04": ["情况比较紧急", "请马上派人到现场", "已经影响到行人和车辆安全", "周边居民很担心"],
    "SJ05": ["每天晚上都有人摆摊", "占用人行道，行人只能走机动车道", "车辆乱停挡住了消防通道",
             "共享单车堆成一堆", "深夜噪音扰民，影响休息", "屡次劝说无效"],
    "SJ06": ["影响出行", "下雨天更严重", "多次反映未解决", "存在安全隐患"],
    "SJ07": ["物业不作为", "居民很担心", "多次反映未解决"],
    "SJ08": ["油烟直排进居民家里", "河水发黑发臭", "有刺鼻的异味", "晚上气味更重"],
    "SJ09": ["存在安全隐患", "请尽快处理", "多次反映未解决"],
    "BJ01": ["设施损坏", "存在安全隐患", "很危险，请尽快修复"],
    "BJ02": ["影响通行安全", "请尽快修复", "行人很不方便"],
    "BJ03": ["设施损坏", "影响市容", "请尽快修复"],
    "BJ04": ["影响通行", "请园林部门处理", "已经好几天了"],
    "BJ05": ["存在安全隐患", "居民很担心", "请尽快处理"],
    "BJ06": ["设备离线好几天了", "设施损坏", "请尽快修复"],
}  # fmt: skip
# The words of a report about a few categories, said as people say them.
SAID = {
    "SJ0402": ["闻到很浓的燃气味", "楼道里有煤气味，担心泄漏"],
    "SJ040101": ["自来水管爆了，水漫到路上", "地下冒水，像是水管破了"],
    "SJ040104": ["燃气管道被挖破了", "施工挖破燃气管"],
    "SJ0403": ["下雨后路面积水很深，车辆无法通行", "积水没过脚踝"],
    "SJ0404": ["路面塌了一个坑", "地面下沉开裂"],
    "SJ0501": ["流动摊贩占道经营", "水果摊占道经营", "早点摊占道经营，油烟很大"],
    "SJ0504": ["机动车乱停放在人行道上", "车辆违停堵住路口"],
    "SJ0510": ["楼下商铺音响声音很大，噪声扰民", "广场舞噪音扰民", "深夜噪声扰民"],
    "SJ0301": ["工地夜间施工扰民", "施工噪音太大"],
    "SJ0802": ["饭店油烟扰民", "烧烤店油烟直排"],
}  # fmt: skip
TEMPLATES = {
    "hotline_12345": ["市民来电反映：{place}{what}，{detail}，请尽快处理。",
                      "来电人称{place}{what}，{detail}，希望相关部门管一管。",
                      "{place}{what}，{detail}。来电人要求反馈处理结果。"],
    "grid_inspector": ["巡查发现{place}{what}，{detail}。", "{place}{what}，已拍照取证。",
                       "网格巡查：{place}{what}。"],
    "resident_photo": ["{place}{what}，{detail}，附照片。", "随手拍：{place}{what}。",
                       "{what}，在{place}，{detail}。"],
    "sensor_alarm": ["{device}报警：{what}，位置{place}。", "物联感知告警（{what}），{place}。"],
    "camera_ai": ["视频AI识别到{what}，{place}。", "摄像头抓拍：{place}疑似{what}。"],
    "external_system": ["市级平台转来工单：{place}{what}。", "上级转办：{place}{what}，{detail}。"],
}  # fmt: skip
NOTES = {
    "send_back": ["经现场核实，不属本单位职责，请重新派单", "地址不在本单位辖区，退回重派",
                  "该问题应由权属单位处理，申请退单"],
    "reassign": ["派错单位，改派", "根据权属核实，改派至属地街道", "原单位无法处置，改派"],
    "reopen": ["居民反映问题再次出现", "回访不满意：问题未彻底解决", "核查发现整改不到位"],
    "cancel": ["报告人来电撤销诉求", "重复受理，撤销", "报告人表示问题已自行解决"],
    "not_our_duty": ["属于业主与物业之间的民事纠纷，非政府部门职责，已告知当事人通过司法途径解决",
                     "属于私人财产纠纷，已告知当事人", "位于本区以外，已告知报告人向属地反映"],
    "resolve": ["已到现场处置完毕", "已清理完毕", "已修复", "已责令整改，现场恢复"],
    "close": ["核查属实，已办结", "回访满意，结案", "现场核查已整改，结案"],
}  # fmt: skip


def plan_history(city: DemoCity, *, seed: int = 1, end: datetime,
                 count: int | None = None) -> list[PlannedReport]:  # fmt: skip
    """The reports of the ~three months before ``end`` (a time with its zone), in time
    order: the same city, seed and end give the same plan. ``count``: how many (default
    by the city's size, ``VOLUMES``)."""
    if end.tzinfo is None:
        raise ValueError("end needs its time zone")
    rng = np.random.default_rng([seed, 11])
    cats = _categories()
    codes = sorted(cats)
    weights = np.array([cats[c]["weight"] for c in codes])
    weights /= weights.sum()
    total = count if count is not None else VOLUMES.get(city.size, VOLUMES["default"])
    places = _Places(city)
    start = end - timedelta(days=DAYS)
    slots = _slots(start, end)
    reports: list[PlannedReport] = []

    def add(at: datetime, code: str, lon: float, lat: float, road: str, fate: str | None = None,
            channel: str | None = None, original: int | None = None,
            address: str = "") -> PlannedReport:  # fmt: skip
        channel = channel or _channel(rng, code, at)
        fate = fate or str(rng.choice(list(FATES), p=np.array(list(FATES.values())) / sum(
            FATES.values())))  # fmt: skip
        report = PlannedReport(
            index=len(reports), at=at, category=code, channel=channel, lon=lon, lat=lat,
            description=_words(rng, code, cats[code]["name"], channel, road or address),
            address=address or road, reporter=_reporter(rng, channel), fate=fate,
            district=places.district(lon, lat), original=original,
            seed=int(rng.integers(2**31)),
        )  # fmt: skip
        reports.append(report)
        return report

    clusters = max(3, total // 12)
    for at in _times(rng, slots, total - clusters):
        code = str(rng.choice(codes, p=weights))
        lon, lat, road, address = places.near(rng, cats[code]["anchor"])
        add(at, code, lon, lat, road, address=address)
    _clusters(rng, places, slots, clusters, add)
    # Repeats: the same problem reported again a little later (fusion joins them), and a
    # few farther off that a dispatcher marks duplicate by hand.
    base = list(reports)
    for original in rng.choice(base, size=max(2, total // 20), replace=False):
        at = original.at + timedelta(hours=float(rng.uniform(0.2, 8)))
        if at < end:
            lon, lat = _moved(rng, original.lon, original.lat, 5, 35)
            add(at, original.category, lon, lat, original.address)
    for original in rng.choice(base, size=max(2, total // 60), replace=False):
        at = original.at + timedelta(hours=float(rng.uniform(0.5, 6)))
        if at < end:
            lon, lat = _moved(rng, original.lon, original.lat, 80, 200)
            add(at, original.category, lon, lat, original.address, fate="duplicate",
                original=original.index)  # fmt: skip
    # Outside the district: accepted, marked outside, dispatched by hand or turned away.
    for at in _times(rng, slots, max(2, total // 100)):
        lon, lat = places.outside(rng)
        add(at, "SJ0101" if rng.random() < 0.5 else "SJ0504", lon, lat, "",
            fate="not_our_duty" if rng.random() < 0.5 else "on_time")  # fmt: skip
    reports.sort(key=lambda r: (r.at, r.index))
    order = {r.index: i for i, r in enumerate(reports)}
    for i, r in enumerate(reports):
        r.index = i
        if r.original is not None:
            r.original = order[r.original]
    return reports


def _slots(start: datetime, end: datetime) -> tuple[list[datetime], np.ndarray, np.ndarray]:
    """Every hour from start to end with its weight for everyone and for inspectors."""
    first = start.astimezone(LOCAL).replace(minute=0, second=0, microsecond=0)
    hours = [first + timedelta(hours=h) for h in range(int((end - first).total_seconds() // 3600))]
    day = np.array([h.hour for h in hours])
    week = np.array([h.weekday() for h in hours])
    everyone = HOURS[day] * WEEKDAYS[week]
    rounds = WORK_HOURS[day] * np.where(week < 5, 1.0, 0.3)
    return hours, everyone / everyone.sum(), rounds / rounds.sum()


def _times(rng: np.random.Generator, slots: tuple[Any, ...], n: int) -> list[datetime]:
    hours, weights, _ = slots
    picked = rng.choice(len(hours), size=n, p=weights)
    minutes = rng.uniform(0, 60, n)
    return [hours[int(h)] + timedelta(minutes=float(m)) for h, m in zip(picked, minutes,
                                                                          strict=True)]  # fmt: skip


def _channel(rng: np.random.Generator, code: str, at: datetime) -> str:
    roll = rng.random()
    if roll < SENSED.get(code, 0.0):
        return "sensor_alarm"
    if roll < SEEN.get(code, 0.0):
        return "camera_ai"
    local = at.astimezone(LOCAL)
    weights = dict(CHANNEL_WEIGHTS)
    if not (8 <= local.hour < 18):
        weights["grid_inspector"] = 0.02  # inspectors work by day
    names = list(weights)
    p = np.array([weights[n] for n in names])
    return str(rng.choice(names, p=p / p.sum()))


def _words(rng: np.random.Generator, code: str, name: str, channel: str, place: str) -> str:
    family = DETAILS.get(code[:4], ["请处理"])
    what = str(rng.choice(SAID[code])) if code in SAID and rng.random() < 0.7 else name
    text = str(rng.choice(TEMPLATES[channel])).format(
        place=place or "区界附近", what=what, detail=str(rng.choice(family)),
        device=str(rng.choice(["液位计", "井盖传感器", "燃气探测器", "烟感"])),
    )  # fmt: skip
    return text


def _reporter(rng: np.random.Generator, channel: str) -> dict[str, str]:
    """A fictional reporter, plainly fake: 某先生, 138-0000-xxxx, example.invalid."""
    if channel not in ("hotline_12345", "resident_photo"):
        return {}
    number = int(rng.integers(10000))
    person = {"name": f"{rng.choice(list(SURNAMES))}{rng.choice(['先生', '女士'])}（演示）",
              "phone": f"138-0000-{number:04d}"}  # fmt: skip
    if channel == "resident_photo" and rng.random() < 0.4:
        person["email"] = f"resident{number:04d}@example.invalid"
    return person


def _moved(rng: np.random.Generator, lon: float, lat: float, near: float,
           far: float) -> tuple[float, float]:  # fmt: skip
    distance, angle = rng.uniform(near, far), rng.uniform(0, 2 * np.pi)
    return (lon + distance * np.cos(angle) / (111_320 * np.cos(np.radians(lat))),
            lat + distance * np.sin(angle) / 110_574)  # fmt: skip


class _Places:
    """Where reports come from: near assets of a layer (of a network and kind)."""

    def __init__(self, city: DemoCity) -> None:
        self.tables = city.tables
        juris = city.tables["jurisdictions"]
        self.districts = [(c, g) for c, g, lv in zip(juris["code"], juris["geom"], juris["level"],
                                                     strict=True) if lv == "district"]  # fmt: skip
        self.city = shapely.union_all([g for _, g in self.districts])
        shapely.prepare(self.city)
        self.pools: dict[str, np.ndarray] = {}
        self._tree = shapely.STRtree([g for _, g in self.districts])

    def pool(self, anchor: str) -> np.ndarray:
        if anchor not in self.pools:
            layer, *what = anchor.split(":")
            table = self.tables[layer]
            keep = np.ones(len(table["geom"]), dtype=bool)
            if layer == "public_spaces" and what:
                keep &= np.asarray(table["kind"]) == what[0]
            elif what:
                keep &= np.asarray(table["network"]) == what[0]
                if len(what) > 1:
                    keep &= np.asarray(table["kind"]) == what[1]
            self.pools[anchor] = np.flatnonzero(keep)
        return self.pools[anchor]

    def near(self, rng: np.random.Generator, anchor: str) -> tuple[float, float, str, str]:
        """A point by an asset of ``anchor`` (layer[:network or kind[:kind]]), with the
        road or address people would name."""
        layer = anchor.split(":")[0]
        pool = self.pool(anchor)
        if not len(pool):
            layer, pool = "buildings", self.pool("buildings")
        i = int(rng.choice(pool))
        geom = self.tables[layer]["geom"][i]
        if layer == "public_spaces" and geom.geom_type != "Point":
            ring = shapely.get_exterior_ring(shapely.get_geometry(geom, 0))
            for _ in range(8):  # a road along the district's edge: its inner side
                point = shapely.line_interpolate_point(ring, float(rng.random()), normalized=True)
                if self.city.contains(point):
                    break
            else:
                point = shapely.point_on_surface(geom)
        elif geom.geom_type == "LineString":
            point = shapely.line_interpolate_point(geom, float(rng.random()), normalized=True)
        else:
            point = shapely.point_on_surface(geom)
        lon, lat = _moved(rng, point.x, point.y, 0, 8)
        road = self._road(rng, layer, i)
        address = self.tables["buildings"]["address"][i] if layer == "buildings" else ""
        return lon, lat, road, address or ""

    def _road(self, rng: np.random.Generator, layer: str, i: int) -> str:
        spaces = self.tables["public_spaces"]
        if layer == "public_spaces" and spaces["name"][i]:
            return str(spaces["name"][i])
        if layer == "buildings":
            return str(self.tables["buildings"]["address"][i])
        roads = self.pool("public_spaces:road")
        return str(spaces["name"][int(rng.choice(roads))]) + "附近"

    def district(self, lon: float, lat: float) -> str:
        nearest = self._tree.query_nearest(shapely.Point(lon, lat))
        return str(self.districts[int(nearest[0])][0])[:6]

    def outside(self, rng: np.random.Generator) -> tuple[float, float]:
        west, south, east, north = self.city.bounds
        while True:
            lon = float(rng.uniform(west - 0.03, east + 0.03))
            lat = float(rng.uniform(south - 0.03, north + 0.03))
            if self.city.distance(shapely.Point(lon, lat)) > 0.01:
                return lon, lat


def _clusters(rng: np.random.Generator, places: _Places, slots: tuple[Any, ...], n: int,
              add: Callable[..., PlannedReport]) -> None:  # fmt: skip
    """A street of 占道经营 in the evenings, a storm's flooding over two days, and a
    building site that works at night for two weeks."""
    hours = slots[0]
    roads = places.pool("public_spaces:road")
    spaces = places.tables["public_spaces"]
    street = int(rng.choice(roads))
    ring = shapely.get_exterior_ring(shapely.get_geometry(spaces["geom"][street], 0))
    evenings = [h for h in hours if 17 <= h.hour <= 21]
    for _ in range(n // 2):
        point = shapely.line_interpolate_point(ring, float(rng.uniform(0, 0.3)), normalized=True)
        at = evenings[int(rng.integers(len(evenings)))] + timedelta(minutes=float(rng.uniform(0,
                                                                                          60)))  # fmt: skip
        code = str(rng.choice(["SJ0501", "SJ0501", "SJ0502", "SJ0513"]))
        add(at, code, *_moved(rng, point.x, point.y, 0, 10), str(spaces["name"][street]))
    storm = hours[int(rng.integers(len(hours) // 3, 2 * len(hours) // 3))]
    for _ in range(n // 3):
        at = storm + timedelta(hours=float(rng.gamma(2.0, 5.0)))
        if at >= hours[-1]:
            continue
        code = str(rng.choice(["SJ0403", "SJ0403", "SJ0602", "SJ0603", "SJ0411"]))
        lon, lat, road, _ = places.near(rng, "pipe_nodes:drainage:manhole")
        add(at, code, lon, lat, road)
    site = int(rng.choice(places.pool("buildings")))
    spot = shapely.point_on_surface(places.tables["buildings"]["geom"][site])
    address = str(places.tables["buildings"]["address"][site])
    nights = [h for h in hours[-24 * 40 : -24 * 26] if h.hour >= 21 or h.hour < 1]
    for _ in range(n - n // 2 - n // 3):
        at = nights[int(rng.integers(len(nights)))] + timedelta(minutes=float(rng.uniform(0, 60)))
        code = str(rng.choice(["SJ0301", "SJ0306"]))
        add(at, code, *_moved(rng, spot.x, spot.y, 0, 20), "", address=address)


def remove_history(conn: psycopg.Connection) -> int:
    """Delete the demo's incidents and their timelines (nothing else); how many went."""
    ids = [r[0] for r in conn.execute(
        "SELECT id FROM incidents WHERE idempotency_key LIKE %s", (KEY_PREFIX + "%",))]  # fmt: skip
    if not ids:
        return 0
    # Photos refer to incidents and their events: they go first.
    conn.execute("DELETE FROM incident_photos WHERE incident_id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM incident_events WHERE incident_id = ANY(%s)", (ids,))
    conn.execute("UPDATE incidents SET duplicate_of = NULL WHERE id = ANY(%s)", (ids,))
    conn.execute("DELETE FROM incidents WHERE id = ANY(%s)", (ids,))
    changes.record(conn, intake.LAYER, "demo", box=None, features=len(ids), table=intake.TABLE)
    return len(ids)


def load_history(conn: psycopg.Connection, city: DemoCity, *, seed: int = 1,
                 end: datetime | None = None, count: int | None = None,
                 progress: Progress | None = None) -> dict[str, int]:  # fmt: skip
    """Replace the demo's history of incidents with the plan for ``city`` and ``seed``
    over the ~three months before ``end`` (default now), replayed in time order through
    intake, the loop and the sweep; commits as it goes. Incidents and transitions per
    kind done."""
    end = datetime.now(UTC) if end is None else end
    plan = plan_history(city, seed=seed, end=end, count=count)
    with conn.transaction():
        remove_history(conn)
    queue: list[_Item] = []
    order = iter(range(10**9))
    for r in plan:
        queue.append(_Item(r.at, next(order), "report", r.index))
    tick = plan[0].at.replace(minute=0, second=0, microsecond=0) + SWEEP_EVERY if plan else end
    while tick <= end:
        queue.append(_Item(tick, next(order), "sweep"))
        tick += SWEEP_EVERY
    heapq.heapify(queue)
    ids: dict[int, int] = {}
    counts = {"incidents": 0, "transitions": 0, "supervised": 0}
    done = 0
    if progress is not None:
        progress(PROGRESS_STEP, 0, len(plan))
    # The sweep can find something new only once a due time has passed or a step has
    # reopened work: it runs at the hours after those (the same marks as every hour).
    dues: list[datetime] = []
    moved = False
    while queue:
        item = heapq.heappop(queue)
        if item.kind == "sweep":
            passed = bool(dues) and dues[0] <= item.at
            while dues and dues[0] <= item.at:
                heapq.heappop(dues)
            if passed or moved:
                counts["supervised"] += len(loop.sweep(conn, now=item.at))
            moved = False
        elif item.kind == "report":
            report = plan[item.index]
            view = _report(conn, report, seed)
            ids[report.index] = view["id"]
            counts["incidents"] += 1
            for due in view["due_at"].values():
                heapq.heappush(dues, due)
            for step in _script(report, view, ids):
                if step["at"] < end:
                    heapq.heappush(queue, _Item(step["at"], next(order), "step", item.index, step))
        elif _step(conn, ids[item.index], item.step, ids):
            counts["transitions"] += 1
            moved = moved or item.step["action"] in ("reopen", "send_back")
        done += 1
        if done % COMMIT_EVERY == 0:
            conn.commit()
            if progress is not None:
                progress(PROGRESS_STEP, counts["incidents"], len(plan))
    conn.commit()
    if progress is not None:
        progress(PROGRESS_STEP, len(plan), len(plan))
    return counts


def _report(conn: psycopg.Connection, report: PlannedReport, seed: int) -> dict[str, Any]:
    """Take the report through intake; its first events carry the report's time."""
    with conn.transaction():
        last = conn.execute("SELECT COALESCE(max(id), 0) FROM incident_events").fetchone()
        taken = intake.report(
            conn, category_code=report.category, channel=report.channel, lon=report.lon,
            lat=report.lat, description=report.description, address=report.address,
            reporter=report.reporter, reported_at=report.at,
            idempotency_key=f"{KEY_PREFIX}{seed}:{report.index}", actor=ACTORS[report.channel],
        )  # fmt: skip
        # Intake stamps its events now: as replayed, they were made when it was reported.
        conn.execute(
            "UPDATE incident_events SET at = %s WHERE id > %s AND (incident_id = %s"
            " OR (incident_id = %s AND action = 'fused'))",
            (report.at, last[0] if last else 0, taken.id, taken.view["duplicate_of"]),
        )
        conn.execute("UPDATE incidents SET created_at = %s, updated_at = %s WHERE id = %s",
                     (report.at, report.at, taken.id))  # fmt: skip
    return taken.view


def _script(report: PlannedReport, view: dict[str, Any], ids: dict[int, int]) -> list[dict]:
    """What people do with the incident after intake, each step with its time."""
    if view["status"] == "duplicate":  # fusion joined it to an open incident
        return []
    rng = np.random.default_rng([report.seed, 7])
    due_response = view["due_at"]["response"]
    due_resolve = view["due_at"]["resolve"]
    response = (due_response - report.at).total_seconds() / 3600
    resolve = (due_resolve - report.at).total_seconds() / 3600
    t = report.at
    steps: list[dict[str, Any]] = []

    def then(hours: float, action: str, **extra: Any) -> None:
        nonlocal t
        t = t + timedelta(hours=max(hours, 0.02))
        steps.append({"at": t, "action": action, **extra})

    if view["status"] == "reported":  # outside, or no rule: a dispatcher takes it up
        if report.fate == "not_our_duty":
            then(rng.uniform(0.3, 3), "not_our_duty", note=NOTES["not_our_duty"][2])
            return steps
        then(rng.uniform(0.2, 2), "dispatch", unit=f"U-{report.district}-CENTRE")
    fate = report.fate
    if fate == "duplicate":
        then(rng.uniform(0.3, 2), "duplicate", original=report.original)
        return steps
    if fate == "cancel":
        then(rng.uniform(0.2, 3), "cancel", note=str(rng.choice(NOTES["cancel"])))
        return steps
    if fate == "not_our_duty":
        then(rng.uniform(0.3, 4), "not_our_duty", note=str(rng.choice(NOTES["not_our_duty"][:2])))
        return steps
    if fate == "send_back":
        then(
            rng.uniform(0.2, 0.6) * response, "send_back", note=str(rng.choice(NOTES["send_back"]))
        )
        then(rng.uniform(0.2, 2), "dispatch", unit=_other_unit(view, report))
    elif fate == "reassign":
        then(rng.uniform(0.2, 0.6) * response, "reassign", unit=_other_unit(view, report),
             note=str(rng.choice(NOTES["reassign"])))  # fmt: skip
    spent = (t - report.at).total_seconds() / 3600
    late = fate == "late"
    then(rng.uniform(1.1, 2.0) * response if late and rng.random() < 0.5
         else rng.uniform(0.05, 0.7) * max(response - spent, 0.1), "accept")  # fmt: skip
    then(rng.uniform(0.05, 1.5), "start")
    if fate == "stalled":
        return steps  # open past its due time: the sweep supervises it
    spent = (t - report.at).total_seconds() / 3600
    target = rng.uniform(1.1, 2.5) * resolve if late else rng.uniform(0.2, 0.9) * resolve
    then(max(target - spent, 0.1), "resolve", note=str(rng.choice(NOTES["resolve"])))
    then(rng.uniform(1, 24), "close", note=str(rng.choice(NOTES["close"])))
    if fate == "reopen":
        then(rng.uniform(24, 120), "reopen", note=str(rng.choice(NOTES["reopen"])))
        then(rng.uniform(2, 48), "resolve", note=str(rng.choice(NOTES["resolve"])))
        then(rng.uniform(1, 24), "close", note=str(rng.choice(NOTES["close"])))
    return steps


def _other_unit(view: dict[str, Any], report: PlannedReport) -> str:
    """Where a dispatcher sends work the first unit should not have had: the street's
    office, or the district's centre when it had it."""
    unit = (view.get("unit") or {}).get("code")
    streets = [j["code"] for j in view["jurisdictions"] if j["level"] == "street"]
    office = f"U-{streets[0][:9]}-OFFICE" if streets else None
    if office is not None and office != unit:
        return office
    centre = f"U-{report.district}-CENTRE"
    return centre if centre != unit else f"U-{report.district}-CITYMGMT"


def _step(conn: psycopg.Connection, incident_id: int, step: dict[str, Any],
          ids: dict[int, int]) -> bool:  # fmt: skip
    """Take a planned step if the incident's state still allows it (the sweep or a fusion
    may have moved it meanwhile); whether it was taken."""
    status, version = conn.execute(
        "SELECT status, version FROM incidents WHERE id = %s", (incident_id,)
    ).fetchone()  # type: ignore[misc]
    action = step["action"]
    if action not in loop.allowed_from(status):
        return False
    extra: dict[str, Any] = {}
    if "unit" in step:
        extra["unit"] = step["unit"]
    if action == "duplicate":
        original = ids.get(step["original"])
        row = None if original is None else conn.execute(
            "SELECT status FROM incidents WHERE id = %s", (original,)).fetchone()  # fmt: skip
        if row is None or row[0] not in loop.ACTIVE:
            return False
        extra["duplicate_of"] = original
    actor = (
        DISPATCHER if action in ("dispatch", "reassign", "duplicate", "cancel", "not_our_duty")
        else VERIFIER if action in ("close", "reopen") else _unit_actor(conn, incident_id)
    )  # fmt: skip
    loop.transition(conn, incident_id, action, actor=actor, note=step.get("note"),
                    expected_version=version, at=step["at"], **extra)  # fmt: skip
    return True


def _unit_actor(conn: psycopg.Connection, incident_id: int) -> str:
    row = conn.execute("SELECT unit_code FROM incidents WHERE id = %s", (incident_id,)).fetchone()
    return f"{row[0]}" if row and row[0] else DISPATCHER


assert set(CHANNEL_WEIGHTS) == set(INCIDENT_CHANNELS)
