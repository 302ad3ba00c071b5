"""Each layer kind as an import target: its table, geometry family and fields.

A field says how to parse a value into the schema's unit and which source names mean it
without a mapping (OSM tags, common GIS names, Chinese names).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from layers.values import (
    open_vocabulary,
    parse_bool,
    parse_depth_m,
    parse_diameter_mm,
    parse_elevation_m,
    parse_floors,
    parse_height_m,
    parse_number,
    parse_text,
    parse_year,
    vocabulary,
)
from twin import schema

# OSM building=* values that say there is a building (or part of one), not its use.
UNKNOWN_USES = frozenset({"yes", "true", "1", "building", "roof", "block", "construction",
                          "ruins", "ruin", "part", "building:part", "entrance", "no",
                          "unclassified", "other", "undefined", "未知", "其他"})  # fmt: skip


def _building_use(value: Any) -> str | None:
    """A building's use in the schema's words; OSM's building=yes (or roof, ruins …) says
    there is a building, not what it is used for: no use, and nothing to report."""
    if str(value).strip().lower() in UNKNOWN_USES:
        return None
    return _BUILDING_USE(value)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Field:
    """A schema field an import can fill."""

    name: str
    parse: Callable[[Any], Any]
    synonyms: tuple[str, ...] = ()
    required: bool = False


@dataclass(frozen=True)
class LayerKind:
    """How features of one kind are imported."""

    name: str  # the catalogue's layer name, e.g. "buildings"
    table: str
    family: str  # "polygon", "line" or "point": what geometry the table holds
    fields: tuple[Field, ...]
    key: tuple[str, ...] = ("dataset", "source_id")  # what a re-import matches on
    geometry_optional: bool = False
    fields_in_properties: bool = False  # scenes keep their declared fields in properties
    defaults: dict[str, Any] = field(default_factory=dict)
    # field -> (another field, its value -> this field's value), where the file has none
    defaults_from: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)

    def field(self, name: str) -> Field:
        """The field of that name; KeyError when the kind has none."""
        for candidate in self.fields:
            if candidate.name == name:
                return candidate
        raise KeyError(name)


SOURCE_ID = Field(
    "source_id",
    parse_text,
    ("source_id", "id", "fid", "osm_id", "@id", "objectid", "object_id", "gid", "uid",
     "编号", "编码", "唯一编号", "要素编号", "要素编码", "标识码", "bsm", "管线编号", "管段编号",
     "管点编号", "节点编号", "楼栋编号", "建筑编号", "设施编号", "wybm"),
)  # fmt: skip

# The schema's uses, with OSM's building=* values (wiki "Key:building") and common names.
# OSM's values are mapped by what the building is for: worship, culture, sport, transport
# and civic buildings are public; farm, storage and technical ones industrial; a private
# garage, shed or hut goes with the homes it serves.
BUILDING_USES = {
    "residential": ("house", "apartments", "detached", "semidetached_house", "dormitory",
                    "terrace", "bungalow", "cabin", "residence", "housing", "annexe",
                    "farm", "houseboat", "static_caravan", "stilt_house", "barracks", "ger",
                    "hut", "shed", "garage", "garages", "carport", "boathouse",
                    "allotment_house", "住宅", "居住", "民用", "别墅", "宿舍"),
    "commercial": ("retail", "shop", "supermarket", "hotel", "kiosk", "mall", "marketplace",
                   "restaurant", "商业", "商场", "商铺", "酒店", "宾馆", "超市"),
    "office": ("offices", "government", "civic", "townhall", "办公", "写字楼", "政府", "行政"),
    "industrial": ("warehouse", "factory", "manufacture", "hangar", "storage_tank", "silo",
                   "barn", "cowshed", "stable", "sty", "greenhouse", "farm_auxiliary",
                   "livestock", "slurry_tank", "digester", "service", "transformer_tower",
                   "water_tower", "tech_cab", "power", "工业", "厂房", "仓库", "仓储"),
    "public": ("public", "public_building", "train_station", "transportation", "parking",
               "church", "cathedral", "chapel", "mosque", "temple", "shrine", "synagogue",
               "monastery", "religious", "kingdom_hall", "presbytery", "pagoda",
               "community_centre", "museum", "library", "theatre", "cinema", "stadium",
               "sports_hall", "sports_centre", "grandstand", "pavilion", "riding_hall",
               "fire_station", "police", "toilets", "castle", "military", "bunker",
               "gatehouse", "公共", "公建", "公共服务", "寺庙", "教堂", "博物馆", "体育馆",
               "车站", "停车楼"),
    "education": ("school", "university", "college", "kindergarten", "教育", "学校", "幼儿园",
                  "大学"),
    "health": ("hospital", "clinic", "医疗", "医院", "卫生"),
    "mixed": ("mixed_use", "mixed use", "综合", "商住", "混合"),
}  # fmt: skip

_BUILDING_USE = vocabulary(BUILDING_USES)

NETWORKS = {
    "water": ("water_supply", "supply", "potable", "给水", "供水", "自来水", "上水", "JS"),
    "drainage": ("storm", "stormwater", "rain", "雨水", "排水", "YS"),
    "sewage": ("sewer", "foul", "wastewater", "污水", "WS"),
    "gas": ("natural_gas", "燃气", "天然气", "煤气", "RQ"),
    "power": ("electric", "electricity", "电力", "供电", "DL"),
    "heat": ("heating", "district_heating", "热力", "供热", "RL"),
    "telecom": ("telecommunication", "communication", "fibre", "通信", "电信", "TX"),
}  # fmt: skip

NODE_KINDS = {
    "valve": ("阀门", "阀", "gate_valve", "butterfly_valve", "闸阀", "蝶阀"),
    "hydrant": ("fire_hydrant", "消防栓", "消火栓"),
    "manhole": ("inspection_chamber", "检查井", "井", "窨井", "井盖", "雨水井", "污水井",
                "outfall", "chamber"),
    "junction": ("node", "joint", "节点", "三通", "四通", "连接点", "tee"),
    "source": ("reservoir", "plant", "水厂", "水源", "气源", "门站", "substation", "变电站"),
    "tank": ("storage", "水池", "水箱", "水塔", "清水池"),
    "service_connection": ("service", "meter", "用户", "接户", "水表", "户表", "接户点"),
}  # fmt: skip

PUBLIC_SPACE_KINDS = {
    "park": ("leisure=park", "garden", "公园", "游园"),
    "square": ("广场", "town_square"),
    "road": ("highway", "street", "道路", "路", "街道路面", "carriageway"),
    "water": ("river", "lake", "pond", "canal", "waterway", "natural=water", "水域", "河道", "湖泊",
              "水体"),
    "green": ("grass", "greenery", "forest", "landuse=grass", "绿地", "绿化", "林地"),
    "plaza": ("pedestrian", "步行街", "广场空间", "plaza"),
}  # fmt: skip

STATUS = {
    "in_service": ("active", "in use", "operational", "在用", "运行", "使用中", "正常"),
    "planned": ("proposed", "design", "规划", "拟建", "设计"),
    "under_repair": ("repair", "maintenance", "维修", "检修", "抢修"),
    "abandoned": ("disused", "retired", "废弃", "停用", "报废"),
}  # fmt: skip

UNIT_KINDS = {
    "centre": ("center", "城运中心", "中心", "指挥中心"),
    "department": ("dept", "bureau", "委办局", "局", "委员会", "department"),
    "street_office": ("街道办事处", "街道办", "镇政府", "street office"),
    "team": ("中队", "队", "站", "工作站", "班组", "squad"),
    "company": ("企业", "公司", "utility", "company"),
}  # fmt: skip

LEVELS = {
    "city": ("市", "municipality", "市级"),
    "district": ("区", "县", "区县", "区级", "county"),
    "street": ("街道", "镇", "街镇", "乡", "town", "township", "subdistrict"),
    "grid": ("网格", "单元网格", "责任网格"),
    "community": ("社区", "居委", "居委会", "村", "村委", "村居", "neighbourhood", "village"),
}  # fmt: skip

FLOW = {
    "forward": ("downstream", "正向", "顺流", "1"),
    "backward": ("reverse", "upstream", "反向", "逆流", "-1"),
    "both": ("bidirectional", "双向", "0"),
    "unknown": ("未知",),
}  # fmt: skip

VALVE_STATES = {
    "open": ("opened", "on", "开", "开启", "常开"),
    "closed": ("close", "shut", "off", "关", "关闭", "常闭"),
}  # fmt: skip

# The demo city's sensor kinds, with the names providers give them. The list is open:
# a kind not here is imported as given (the city runs dozens of kinds, and gets new ones).
SENSOR_KINDS = {
    "water_pressure": ("pressure", "水压", "压力", "管网压力", "水压监测", "压力计", "压力监测"),
    "water_flow": ("flow", "flow_meter", "流量", "水流量", "流量计", "流量监测"),
    "manhole_tilt": ("manhole", "manhole_cover", "井盖", "井盖位移", "井盖倾斜", "井盖监测",
                     "智能井盖"),
    "water_level": ("level", "liquid_level", "水位", "液位", "积水", "水位计", "液位计",
                    "积水监测", "水位监测"),
    "gas_concentration": ("gas", "gas_detector", "methane", "燃气", "可燃气体", "燃气浓度",
                          "甲烷", "燃气监测", "可燃气体探测器"),
    "smoke": ("smoke_detector", "烟感", "烟雾", "烟雾报警", "烟感探测器", "独立烟感"),
    "noise": ("sound", "sound_level", "噪声", "噪音", "噪声监测"),
    "air_quality": ("air", "aqi", "pm2.5", "pm10", "空气质量", "空气", "扬尘", "大气"),
    "structure_tilt": ("structural_tilt", "building_tilt", "结构倾斜", "建筑倾斜", "房屋倾斜",
                       "结构监测"),
    "elevator": ("lift", "电梯", "电梯监测"),
    "electric_fire": ("electrical_fire", "residual_current", "电气火灾", "电气火灾监控",
                      "剩余电流"),
    "temperature": ("temp", "温度", "温度计"),
    # Devices that sense but measure no quantity: they have no unit of measure.
    "camera": ("cctv", "video", "video_camera", "video_surveillance", "surveillance_camera",
               "ai_camera", "ai camera", "smart_camera", "ipc", "视频监控", "摄像头", "监控",
               "监控摄像头", "摄像机", "视频", "智能摄像头", "AI摄像头", "AI摄像机",
               "天网", "雪亮工程", "高空瞭望"),
    "access_control": ("access", "door_access", "门禁", "门禁系统", "智能门禁", "人脸门禁",
                       "道闸", "车辆道闸"),
    "alarm_button": ("panic_button", "sos", "一键报警", "紧急按钮", "报警按钮", "一键求助"),
}  # fmt: skip
# Kinds that measure no quantity: their unit of measure is empty (none is needed).
UNITLESS_SENSOR_KINDS = frozenset({"camera", "access_control", "alarm_button"})

# The unit each kind of sensor reports in, as the city's sensor platform has them: a file
# that does not say its units gets these (and the report says so).
SENSOR_UNITS = {
    "water_pressure": "kPa", "water_flow": "m3/h", "manhole_tilt": "degree",
    "water_level": "m", "gas_concentration": "%LEL", "smoke": "dB/m", "noise": "dB(A)",
    "air_quality": "µg/m3", "structure_tilt": "degree", "elevator": "m/s2",
    "electric_fire": "mA", "temperature": "℃",
    **dict.fromkeys(UNITLESS_SENSOR_KINDS, ""),
}  # fmt: skip

NAME = Field("name", parse_text, ("name", "名称", "名字", "name:zh", "title"))

KINDS: dict[str, LayerKind] = {
    "buildings": LayerKind(
        "buildings", "buildings", "polygon",
        (
            SOURCE_ID,
            Field("name", parse_text, ("name", "名称", "建筑名称", "楼名", "name:zh")),
            Field("address", parse_text, ("address", "addr", "addr:full", "地址", "门牌地址",
                                          "门牌")),
            Field("use", _building_use, ("use", "building", "building_use", "usage",
                                                     "用途", "建筑用途", "功能", "类型")),
            Field("height_m", parse_height_m, ("height_m", "height", "building:height", "高度",
                                               "建筑高度", "楼高", "h", "hgt")),
            Field("floors", parse_floors, ("floors", "building:levels", "levels", "storeys",
                                           "stories", "floor_count", "num_floors", "层数",
                                           "楼层数", "地上层数", "楼层")),
            Field("base_elevation_m", parse_elevation_m, ("base_elevation_m", "base_elevation",
                                                       "ele", "elevation", "地面高程", "基底高程",
                                                       "高程")),
        ),
    ),
    "public_spaces": LayerKind(
        "public_spaces", "public_spaces", "polygon",
        (
            SOURCE_ID,
            NAME,
            Field("kind", vocabulary(PUBLIC_SPACE_KINDS), ("kind", "type", "class", "leisure",
                                                           "landuse", "natural", "类型", "类别"),
                  required=True),
        ),
    ),
    "pipes": LayerKind(
        "pipes", "pipes", "line",
        (
            SOURCE_ID,
            Field("network", vocabulary(NETWORKS), ("network", "utility", "system", "管线类型",
                                                    "管网类型", "管类", "专业", "type"),
                  required=True),
            Field("diameter_mm", parse_diameter_mm, ("diameter_mm", "diameter", "dn", "dia",
                                                     "size", "管径", "口径", "管径mm")),
            Field("material", parse_text, ("material", "mat", "材质", "管材")),
            Field("depth_m", parse_depth_m, ("depth_m", "depth", "cover", "cover_depth", "埋深",
                                              "平均埋深")),
            Field("invert_start_m", parse_elevation_m, ("invert_start_m", "invert_start",
                                                     "us_invert", "start_invert", "起点管底高程",
                                                     "起点高程")),
            Field("invert_end_m", parse_elevation_m, ("invert_end_m", "invert_end", "ds_invert",
                                                   "end_invert", "终点管底高程", "终点高程")),
            Field("install_year", parse_year, ("install_year", "year", "installed",
                                               "install_date", "建设年代", "敷设年代", "埋设年代",
                                               "建设年份")),
            Field("status", vocabulary(STATUS), ("status", "state", "状态", "使用状态")),
            Field("flow_direction", vocabulary(FLOW), ("flow_direction", "flow", "direction",
                                                       "流向")),
        ),
        defaults={"status": "in_service", "flow_direction": "unknown"},
    ),
    "pipe_nodes": LayerKind(
        "pipe_nodes", "pipe_nodes", "point",
        (
            SOURCE_ID,
            Field("network", vocabulary(NETWORKS), ("network", "utility", "system", "管线类型",
                                                    "管网类型", "专业"),
                  required=True),
            Field("kind", vocabulary(NODE_KINDS), ("kind", "type", "node_type", "feature",
                                                   "类型", "节点类型", "附属物", "特征"),
                  required=True),
            Field("state", vocabulary(VALVE_STATES), ("state", "valve_state", "开关状态",
                                                      "状态")),
            Field("operable", parse_bool, ("operable", "operational", "可操作", "是否可操作")),
            Field("depth_m", parse_depth_m, ("depth_m", "depth", "井深", "埋深")),
            Field("ground_elevation_m", parse_elevation_m, ("ground_elevation_m",
                                                         "ground_elevation", "elevation", "ele",
                                                         "地面高程", "高程")),
        ),
        defaults={"operable": True},
    ),
    "sensors": LayerKind(
        "sensors", "sensors", "point",
        (
            Field("device_id", parse_text, ("device_id", "device", "sn", "serial", "imei", "id",
                                            "设备编号", "设备id", "编号"), required=True),
            Field("kind", open_vocabulary(SENSOR_KINDS), ("kind", "type", "sensor_type",
                                                          "类型", "设备类型"),
                  required=True),
            Field("unit_of_measure", parse_text, ("unit_of_measure", "unit", "uom", "units",
                                                  "单位", "计量单位"), required=True),
            Field("threshold_low", parse_number, ("threshold_low", "low", "min", "下限",
                                                  "报警下限")),
            Field("threshold_high", parse_number, ("threshold_high", "high", "max", "上限",
                                                   "报警上限")),
            Field("elevation_m", parse_elevation_m, ("elevation_m", "elevation", "ele", "高程",
                                                  "安装高程")),
            Field("online", parse_bool, ("online", "在线", "是否在线")),
        ),
        key=("device_id",),
        defaults={"online": True},
        defaults_from={"unit_of_measure": ("kind", SENSOR_UNITS)},
    ),
    "jurisdictions": LayerKind(
        "jurisdictions", "jurisdictions", "polygon",
        (
            Field("code", parse_text, ("code", "adcode", "区划代码", "代码", "编码", "网格编码",
                                       "gid", "id"), required=True),
            Field("name", parse_text, ("name", "名称", "网格名称", "区划名称"), required=True),
            Field("level", vocabulary(LEVELS), ("level", "级别", "层级", "admin_level"),
                  required=True),
            Field("parent_code", parse_text, ("parent_code", "parent", "上级代码", "上级编码",
                                              "所属街道", "所属代码")),
        ),
        key=("code",),
    ),
    "units": LayerKind(
        "units", "units", "point",
        (
            Field("code", parse_text, ("code", "unit_code", "编码", "代码", "单位编码", "id"),
                  required=True),
            Field("name", parse_text, ("name", "名称", "单位名称"), required=True),
            Field("kind", vocabulary(UNIT_KINDS), ("kind", "type", "类型", "单位类型"),
                  required=True),
            Field("jurisdiction_code", parse_text, ("jurisdiction_code", "jurisdiction",
                                                    "所属区域", "辖区代码", "辖区"),
                  required=True),
            Field("phone", parse_text, ("phone", "tel", "telephone", "电话", "联系电话")),
        ),
        key=("code",),
        geometry_optional=True,
    ),
}  # fmt: skip

# Kinds must stay in step with the schema's allowed words.
assert set(NETWORKS) == set(schema.PIPE_NETWORKS)
assert set(NODE_KINDS) == set(schema.PIPE_NODE_KINDS)
assert set(PUBLIC_SPACE_KINDS) == set(schema.PUBLIC_SPACE_KINDS)
assert set(LEVELS) == set(schema.JURISDICTION_LEVELS)
assert set(UNIT_KINDS) == set(schema.UNIT_KINDS)

# Typical storey heights by use, for estimating a height from floors (metres per floor).
STOREY_HEIGHT_M = {
    "residential": 3.0, "commercial": 4.2, "office": 3.8, "industrial": 6.0, "public": 4.0,
    "education": 3.8, "health": 4.0, "mixed": 3.5,
}  # fmt: skip
DEFAULT_STOREY_HEIGHT_M = 3.2
