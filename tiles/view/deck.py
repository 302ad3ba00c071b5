"""The 3D view's deck: its layers and their styling, with pydeck, over the one map's own
tiles (the contract's URLs). No base map: the one map's layers are the base.

Vector tiles are flat (MVT is 2D). Buildings stand on their base elevation and pipes lie
at their depth below the ground because the page lifts each tile's vertices by a property
as the tile arrives (``lifted`` in one-map.js, named here by ``_lifted``). Heights are
metres above the vertical datum, as the terrain's: ``ground`` is the ground's elevation
in the middle of the city, where a feature that says nothing of its height is put. The
terrain writes no depth, so the flat layers on it (public space, incidents) are never
hidden where the ground rises a metre above ``ground``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pydeck

from tiles import vector
from twin import registry

TMS = "WebMercatorQuad"
STATIC = "/view/static"
MAX_TILE_ZOOM = 16  # deeper views stretch z16 tiles: every feature is in them (z15 up)
# What each toggle is called in the panel, in drawing order (the ground first).
TITLES = {
    "terrain": "Terrain 地形",
    "public_spaces": "Public space 公共空间",
    "jurisdictions": "Grids 网格",
    "pipes": "Pipes 地下管网",
    "pipe_nodes": "Valves, hydrants 阀门 消火栓",
    "buildings": "Buildings 城市楼宇",
    "sensors": "Sensors 物联感知",
    "incidents": "Incidents 事件",
}
DEFAULT_HIDDEN = ("jurisdictions",)

# Colours, RGBA. Pipes by network as the usual utility maps colour them.
NETWORK_COLOURS = {
    "water": [30, 120, 255, 255],
    "drainage": [0, 190, 200, 255],
    "sewage": [150, 90, 40, 255],
    "gas": [255, 210, 0, 255],
    "power": [230, 40, 40, 255],
    "heat": [255, 130, 0, 255],
    "telecom": [160, 80, 220, 255],
}
PUBLIC_SPACE_COLOURS = {
    "road": [120, 120, 125, 170],
    "park": [80, 160, 80, 170],
    "green": [110, 180, 90, 170],
    "water": [60, 130, 200, 190],
    "square": [190, 180, 160, 170],
    "plaza": [200, 185, 165, 170],
}
BUILDING_COLOURS = {
    "residential": [230, 220, 200, 255],
    "commercial": [150, 190, 230, 255],
    "office": [170, 180, 235, 255],
    "industrial": [200, 170, 140, 255],
    "public": [240, 190, 150, 255],
    "education": [245, 215, 130, 255],
    "health": [245, 170, 190, 255],
    "mixed": [205, 200, 225, 255],
}
BUILDING_OTHER = [215, 215, 215, 255]
SENSOR_COLOURS = {
    "online": [40, 200, 90, 255],
    "alarm": [255, 40, 40, 255],
    "offline": [140, 140, 140, 255],
}
# The closed loop's states: open ones warm, finished ones cool, the void ones faint.
INCIDENT_COLOURS = {
    "reported": [255, 40, 40, 255],
    "dispatched": [255, 120, 0, 255],
    "accepted": [255, 200, 0, 255],
    "in_progress": [250, 230, 60, 255],
    "resolved": [40, 190, 90, 255],
    "closed": [90, 140, 110, 255],
    "cancelled": [170, 170, 170, 200],
    "duplicate": [170, 170, 170, 200],
    "not_our_duty": [170, 170, 170, 200],
}
# An isolation (POST /network/{network}/isolate) drawn over everything, by the role of each
# feature of its map: what goes dry in a strong colour, valves to act on ringed red.
ISOLATION_COLOURS = {
    "isolated": [255, 40, 200, 255],
    "close": [255, 255, 255, 255],
    "closed": [110, 110, 110, 255],
    "building_isolated": [255, 70, 70, 255],
    "building_cut_off": [255, 170, 0, 255],
}
SENSITIVE_RING = [170, 60, 255, 255]  # a hospital, a school, a home for the elderly
ISOLATION_LIFT_M = 3.0  # above the ground, so it is seen over the pipes beneath it
FINISHED = ("resolved", "closed", "cancelled", "duplicate", "not_our_duty")
OTHER = [200, 200, 200, 255]
TERRAIN_DECODER = {"rScaler": 256, "gScaler": 1, "bScaler": 1 / 256, "offset": -32768}


@dataclass(frozen=True)
class ViewState:
    """Where the camera starts: the demo city's middle, its extent in sight, tilted."""

    longitude: float
    latitude: float
    zoom: float
    pitch: float = 50.0
    bearing: float = -15.0


def fit(bbox: Sequence[float], width: int = 1200, height: int = 800) -> ViewState:
    """The view that shows ``bbox`` (west, south, east, north; degrees) in a window of
    ``width`` x ``height`` pixels, on Web Mercator."""
    west, south, east, north = bbox

    def mercator_y(lat: float) -> float:
        return math.log(math.tan(math.pi / 4 + math.radians(max(-85.0, min(85.0, lat))) / 2))

    span_x = max(east - west, 1e-6) / 360
    span_y = max(mercator_y(north) - mercator_y(south), 1e-6) / (2 * math.pi)
    zoom = min(math.log2(width / 512 / span_x), math.log2(height / 512 / span_y))
    centre_y = (mercator_y(north) + mercator_y(south)) / 2
    latitude = math.degrees(2 * math.atan(math.exp(centre_y)) - math.pi / 2)
    return ViewState((west + east) / 2, latitude, round(max(0.0, min(zoom, 20.0)), 2))


def _match(expression: str, colours: dict[str, list[int]], other: list[int]) -> str:
    """A deck.gl JSON accessor: the colour of the value of ``expression`` (a chain of
    ternaries, since JSON expressions may not call functions)."""
    chain = f"{other}"
    for value, colour in reversed(colours.items()):
        chain = f"{expression} === '{value}' ? {colour} : ({chain})"
    return chain


def _lifted(prop: str | None, *, scale: float = 1.0, offset: float = 0.0,
            missing: float) -> dict[str, Any]:  # fmt: skip
    """The page's tile fetcher that puts each vertex at ``offset + scale x prop`` metres,
    or at ``missing`` for a feature without ``prop``."""
    return {
        "@@function": "lifted",
        "property": prop,
        "scale": scale,
        "offset": round(offset, 2),
        "missing": round(missing, 2),
    }


def _tiles(layer: str) -> str:
    return f"/collections/{layer}/tiles/{TMS}/{{z}}/{{y}}/{{x}}"


def static_url(name: str) -> str:
    """The address of one of the page's files (tiles.view.assets) on our server."""
    return f"{STATIC}/{name}"


def _mvt(
    layer: str, worker: str, extents: Mapping[str, Sequence[float]], **props: Any
) -> pydeck.Layer:
    """An MVTLayer over one collection's tiles, parsed by our own served ``worker``,
    asking only the tiles its tileset has (from the layer's lowest zoom, within its extent
    in ``extents`` when it has one): any other is a 404 (OGC API - Tiles)."""
    props.setdefault("visible", layer not in DEFAULT_HIDDEN)
    props.setdefault("min_zoom", registry.BUILTIN[layer].tiling.min_zoom)
    if "id" in vector.fields(registry.BUILTIN[layer]):
        # Highlight by the id property, which every feature of the tile has (merged ones
        # none): by MVT feature id, deck.gl's binary look-up threw on hover while zooming
        # out ("Cannot read properties of undefined (reading 'id')").
        props.setdefault("unique_id_property", "'id'")
    if extents.get(layer):
        props.setdefault("extent", [round(float(v), 7) for v in extents[layer]])
    props.setdefault("load_options", {"mvt": {"workerUrl": worker}})
    return pydeck.Layer(
        "MVTLayer",
        _tiles(layer),
        id=layer,
        max_zoom=MAX_TILE_ZOOM,
        pickable=True,
        auto_highlight=True,
        highlight_color=[255, 255, 255, 90],
        **props,
    )


def layers(
    *,
    terrain: Sequence[float] | None,
    ground: float = 0.0,
    url: Callable[[str], str] = static_url,
    extents: Mapping[str, Sequence[float]] | None = None,
    terrain_min_zoom: int = 0,
) -> list[pydeck.Layer]:
    """The one map's layers, ground first; the terrain's only when a DEM is loaded, over
    its extent ``terrain`` (west, south, east, north). ``ground`` is the elevation of the
    ground (metres) for features that have none; ``url`` gives the workers' addresses;
    ``extents`` the feature layers' (west, south, east, north), beyond which they have no
    tiles; ``terrain_min_zoom`` the lowest zoom whose terrain tiles are worth asking (below
    it the DEM is a smudge, its tiles empty, which the TerrainLayer cannot take)."""
    extents = extents or {}
    mvt_worker = url("mvt-worker.js")
    surface = ground + 0.3  # what lies on the ground, a hair above it
    drawn = []
    if terrain is not None:
        drawn.append(
            pydeck.Layer(
                "TerrainLayer",
                id="terrain",
                elevation_data=f"'/collections/terrain/coverage/tiles/{TMS}/{{z}}/{{y}}/{{x}}'",
                texture=f"'/collections/terrain/map/tiles/{TMS}/{{z}}/{{y}}/{{x}}'",
                elevation_decoder=TERRAIN_DECODER,
                mesh_max_error=2.0,
                min_zoom=terrain_min_zoom,
                max_zoom=15,
                extent=[round(v, 6) for v in terrain],  # no tiles asked for beyond the DEM
                parameters={"depthWriteEnabled": False},
                load_options={"terrain": {"workerUrl": url("terrain-worker.js")}},
            )
        )
    drawn += [
        _mvt(
            "public_spaces",
            mvt_worker,
            extents,
            fetch=_lifted(None, missing=surface),
            filled=True,
            stroked=False,
            get_fill_color=_match("properties.kind", PUBLIC_SPACE_COLOURS, [170, 170, 170, 150]),
            # Translucent and writing no depth: the pipes beneath the roads show through.
            parameters={"depthWriteEnabled": False},
        ),
        _mvt(
            "jurisdictions",
            mvt_worker,
            extents,
            fetch=_lifted(None, missing=surface + 0.2),
            filled=False,
            stroked=True,
            get_line_color="properties.level === 'grid' ? [255, 80, 80, 220] : [255, 160, 0, 220]",
            get_line_width=2,
            line_width_units="'pixels'",
        ),
        _mvt(
            "pipes",
            mvt_worker,
            extents,
            # A pipe whose depth is not known is drawn at 1.5 m, a usual cover.
            fetch=_lifted("depth_m", scale=-1.0, offset=ground, missing=ground - 1.5),
            get_line_color=_match("properties.network", NETWORK_COLOURS, OTHER),
            # Metres of diameter, widened so a DN100 main is seen from a street away.
            get_line_width="(properties.diameter_mm || 200) / 1000 * 3",
            line_width_min_pixels=1.5,
            line_width_max_pixels=8,
        ),
        _mvt(
            "pipe_nodes",
            mvt_worker,
            extents,
            fetch=_lifted("depth_m", scale=-1.0, offset=ground, missing=surface),
            point_type="'circle'",
            get_fill_color="properties.kind === 'hydrant' ? [255, 50, 50, 255] : "
            "(properties.state === 'closed' ? [120, 0, 0, 255] : [0, 220, 255, 255])",
            get_line_color=[20, 20, 20, 255],
            stroked=True,
            # Valves and hydrants only; manholes and junctions are in the pipes' lines.
            get_point_radius="properties.kind === 'valve' || properties.kind === 'hydrant'"
            " || properties.count ? 1.5 : 0",
            point_radius_min_pixels=0,
            point_radius_max_pixels=8,
        ),
        _mvt(
            "buildings",
            mvt_worker,
            extents,
            fetch=_lifted("base_elevation_m", missing=ground),
            extruded=True,
            wireframe=False,
            get_elevation="properties.height_m || (properties.count ? 12 : 6)",
            get_fill_color=_match("properties.use", BUILDING_COLOURS, BUILDING_OTHER),
            material={"ambient": 0.45, "diffuse": 0.6, "shininess": 24},
        ),
        _mvt(
            "sensors",
            mvt_worker,
            extents,
            fetch=_lifted("elevation_m", missing=surface + 1.0),  # where it is mounted
            point_type="'circle'",
            get_fill_color=(
                f"properties.online === false ? {SENSOR_COLOURS['offline']} : "
                "((properties.threshold_high != null && properties.latest_value > "
                "properties.threshold_high) || (properties.threshold_low != null && "
                f"properties.latest_value < properties.threshold_low) ? "
                f"{SENSOR_COLOURS['alarm']} : {SENSOR_COLOURS['online']})"
            ),
            get_point_radius=3,
            point_radius_units="'pixels'",
        ),
        _mvt(
            "incidents",
            mvt_worker,
            extents,
            fetch=_lifted(None, missing=surface + 1.0),
            point_type="'circle'",
            get_fill_color=_match("properties.status", INCIDENT_COLOURS, OTHER),
            # Overdue (督办) ringed in magenta; finished and void ones drawn smaller.
            get_line_color="properties.overdue ? [255, 0, 200, 255] : [20, 20, 20, 220]",
            stroked=True,
            get_line_width="properties.overdue ? 3 : 1",
            line_width_units="'pixels'",
            get_point_radius=(
                "properties.count ? (properties.count > 24 ? 12 : 6 + properties.count / 4) : "
                f"({' || '.join(f'properties.status === {s!r}' for s in FINISHED)} ? 4 : 7)"
            ),
            point_radius_units="'pixels'",
            # The page polls the change log and reloads these tiles: never the browser's
            # copy without asking the server (a 304 when nothing changed).
            load_options={
                "mvt": {"workerUrl": mvt_worker},
                "fetch": {"cache": "no-cache"},
            },
        ),
    ]
    return drawn


def isolation_layer() -> pydeck.Layer:
    """The layer the page fills with an isolation's ``map`` (GeoJSON whose features carry
    ``properties.role``): empty until staff ask. Drawn last and whatever the depth says, so
    buildings and the ground never hide it."""
    role = "properties.role"
    return pydeck.Layer(
        "GeoJsonLayer",
        [],
        id="isolation",
        pickable=True,
        auto_highlight=True,
        highlight_color=[255, 255, 255, 120],
        stroked=True,
        filled=True,
        point_type="'circle'",
        get_fill_color=_match(role, ISOLATION_COLOURS, OTHER),
        # Pipes take their line colour; a point's ring says what to do with it.
        get_line_color=f"{role} === 'isolated' ? {ISOLATION_COLOURS['isolated']} : "
        f"({role} === 'close' ? [230, 0, 0, 255] : "
        f"(properties.sensitive ? {SENSITIVE_RING} : [20, 20, 20, 255]))",
        get_line_width=f"{role} === 'isolated' ? 7 : ({role} === 'close' || "
        "properties.sensitive ? 3 : 1.5)",
        line_width_units="'pixels'",
        line_cap_rounded=True,
        line_joint_rounded=True,
        get_point_radius=f"{role} === 'close' ? 8 : (properties.sensitive ? 8 : "
        f"({role} === 'closed' ? 6 : 5))",
        point_radius_units="'pixels'",
        parameters={"depthCompare": "always", "depthWriteEnabled": False},
    )


def deck_json(
    view: ViewState,
    *,
    terrain: Sequence[float] | None,
    ground: float = 0.0,
    url: Callable[[str], str] = static_url,
    extents: Mapping[str, Sequence[float]] | None = None,
    terrain_min_zoom: int = 0,
) -> str:
    """The deck as deck.gl's JSON converter reads it (``layers`` says what is drawn, and
    the isolation's layer, empty, comes last)."""
    drawn = layers(terrain=terrain, ground=ground, url=url, extents=extents,
                   terrain_min_zoom=terrain_min_zoom)  # fmt: skip
    deck = pydeck.Deck(
        layers=[*drawn, isolation_layer()],
        initial_view_state=pydeck.ViewState(
            longitude=view.longitude,
            latitude=view.latitude,
            zoom=view.zoom,
            pitch=view.pitch,
            bearing=view.bearing,
            max_pitch=85,
        ),
        map_provider=None,
        map_style=None,
        views=[pydeck.View(type="MapView", controller=True)],
    )
    return str(deck.to_json())
