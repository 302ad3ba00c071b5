"""Name pools for the fictional demo city (plausible Shanghai-style place names)."""

from __future__ import annotations

# Two-character place words; roads, estates and communities are built from them.
PLACE = [
    "兰溪",
    "铜川",
    "梅岭",
    "棠浦",
    "枫桥",
    "桃浦",
    "真光",
    "杏山",
    "云岭",
    "金沙",
    "白兰",
    "丹巴",
    "中江",
    "清涧",
    "泸定",
    "怒江",
    "古浪",
    "柳营",
    "绥德",
    "石泉",
    "顺义",
    "延长",
    "志丹",
    "南石",
    "西康",
    "昌化",
    "胶州",
    "余姚",
    "宜川",
    "子长",
    "甘泉",
    "安远",
    "莫干",
    "长风",
    "光新",
    "沪太",
    "祁连",
    "华池",
    "敦煌",
    "平利",
    "远景",
    "祁安",
    "梅川",
    "丰庄",
    "富平",
    "大渡",
    "岚山",
    "凯旋",
    "宁强",
    "铜仁",
    "定西",
    "平凉",
    "永登",
    "靖边",
    "凤县",
    "镇坪",
    "汉中",
    "略阳",
    "商南",
    "泾阳",
    "安康",
    "洛川",
    "榆林",
    "神木",
    "佳县",
    "宝鸡",
    "天水",
    "张掖",
    "酒泉",
    "秦岭",
    "渭南",
    "延川",
    "富县",
    "黄陵",
    "礼泉",
    "乾县",
    "三原",
    "高陵",
    "蓝田",
    "周至",
    "华阴",
    "潼关",
    "韩城",
    "合阳",
    "澄城",
    "白水",
    "蒲城",
    "富阳",
    "临安",
    "桐庐",
    "淳安",
    "建德",
    "诸暨",
    "嵊州",
    "新昌",
    "上虞",
    "慈溪",
    "奉化",
    "象山",
    "宁海",
    "三门",
    "天台",
    "仙居",
    "温岭",
    "玉环",
    "乐清",
    "瑞安",
    "平阳",
    "泰顺",
    "文成",
    "永嘉",
    "青田",
    "缙云",
    "遂昌",
    "松阳",
    "云和",
    "庆元",
    "龙泉",
    "武夷",
    "建瓯",
    "邵武",
    "光泽",
    "松溪",
    "政和",
    "浦城",
    "崇安",
    "南平",
    "沙县",
]

ROAD_SUFFIX_MAIN = ("路", "路", "路", "大道")
ROAD_SUFFIX_SEC = ("路", "路", "支路", "街")
DIRECTION = ("", "东", "西", "南", "北", "中", "新")

ESTATE_SUFFIX = ("新村", "小区", "苑", "花园", "公寓", "家园", "新苑", "坊")
LANE_SUFFIX = ("里", "坊", "邨")
OFFICE_SUFFIX = ("大厦", "中心", "广场", "国际大厦", "商务楼", "科技园")
COMMERCIAL_SUFFIX = ("商厦", "购物中心", "百货", "广场", "商城")
FACTORY_SUFFIX = ("机械厂", "纺织厂", "印刷厂", "仓库", "食品厂", "电器厂", "物流园")
PARK_SUFFIX = ("公园", "绿地", "休闲公园", "滨河公园")

DISTRICT_NAMES = [
    "沪西",
    "江湾",
    "新泾",
    "曹溪",
    "真如",
    "长宁",
    "闸江",
    "蕴藻",
    "淞南",
    "彭浦",
    "大场",
    "顾村",
    "南翔",
    "江桥",
    "华漕",
    "虹桥",
    "七宝",
    "梅陇",
    "龙华",
    "漕河",
    "北新",
    "泗泾",
    "九亭",
    "莘庄",
    "颛桥",
    "吴泾",
    "三林",
    "北蔡",
    "张江",
    "金桥",
    "高行",
    "高桥",
    "洋泾",
    "花木",
    "川沙",
    "唐镇",
    "曹路",
    "合庆",
    "周浦",
    "康桥",
    "航头",
    "新场",
    "惠南",
    "祝桥",
    "外冈",
    "嘉定",
    "马陆",
    "安亭",
    "徐行",
    "华亭",
]

CN_DIGITS = "零一二三四五六七八九十"


def road_name(i: int, main: bool) -> str:
    """A road name for road line ``i``, unique for the first ~900 lines."""
    word = PLACE[i % len(PLACE)]
    direction = DIRECTION[(i // len(PLACE)) % len(DIRECTION)]
    suffixes = ROAD_SUFFIX_MAIN if main else ROAD_SUFFIX_SEC
    suffix = suffixes[(i * 7 // len(PLACE) + i) % len(suffixes)]
    return f"{word}{direction}{suffix}"


def district_name(i: int, single: bool) -> str:
    """District names: 演示区 for a one-district city, otherwise place words + 区."""
    if single:
        return "演示区"
    return DISTRICT_NAMES[i % len(DISTRICT_NAMES)] + "区"


def cn_number(n: int) -> str:
    """Chinese numeral for 1..99 (第十二网格)."""
    if n < 11:
        return CN_DIGITS[n]
    tens, ones = divmod(n, 10)
    head = "" if tens == 1 else CN_DIGITS[tens]
    return f"{head}十{CN_DIGITS[ones] if ones else ''}"
