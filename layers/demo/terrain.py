"""The demo city's ground: a DEM drawn from the generator's own elevation field.

Buildings' base elevations and pipe nodes' ground elevations come from that field
(layers/demo/_geo.py ``Elevation``), so a DEM sampled from it puts the ground where they
already stand. It is written as a GeoTIFF in the generator's metric frame and loaded by
the same import as ``twin terrain import`` (layers/terrain.py), as a provider's DEM would be.

10 m cells: the field's shortest undulation is 1.9 km long, so bilinear between 10 m
cells is within a tenth of a millimetre of it; finer cells would only cost load time
(the default district is 0.26 million cells at 10 m, a million at 5 m).
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import rasterio
import shapely
from pyproj import Transformer
from rasterio.transform import from_origin

from layers.demo._geo import _TMERC, Elevation, Warp
from layers.demo.generate import DemoCity
from layers.terrain import import_dem

CELL_M = 10.0
MARGIN_M = 150.0  # ground beyond the district's edge, so its border streets stand on it
DATASET = "demo"
PROVIDER = "twin demo (fictional)"


def elevation_field(city: DemoCity) -> Elevation:
    """The generator's elevation field, drawn again from the city's seed in the order the
    generator draws it (its street warp first, then the elevation)."""
    rng = np.random.default_rng(city.seed)
    Warp.random(rng)
    return Elevation.random(rng)


def demo_dem(city: DemoCity) -> tuple[np.ndarray, Any]:
    """The DEM over the city's districts and a margin: elevations (rows north to south)
    and their geotransform in the generator's metric frame."""
    to_frame = Transformer.from_crs("EPSG:4326", _TMERC, always_xy=True)
    west, south, east, north = shapely.total_bounds(city.tables["jurisdictions"]["geom"])
    xs, ys = to_frame.transform([west, west, east, east], [south, north, south, north])
    left = np.floor((min(xs) - MARGIN_M) / CELL_M) * CELL_M
    top = np.ceil((max(ys) + MARGIN_M) / CELL_M) * CELL_M
    width = int(np.ceil((max(xs) + MARGIN_M - left) / CELL_M))
    height = int(np.ceil((top - (min(ys) - MARGIN_M)) / CELL_M))
    columns = left + (np.arange(width) + 0.5) * CELL_M
    rows = top - (np.arange(height) + 0.5) * CELL_M
    grid_x, grid_y = np.meshgrid(columns, rows)
    field = elevation_field(city)
    z = field(np.column_stack([grid_x.ravel(), grid_y.ravel()])).reshape(height, width)
    return z.astype("float32"), from_origin(left, top, CELL_M, CELL_M)


def load_demo_terrain(conn: psycopg.Connection, city: DemoCity) -> dict[str, int]:
    """Replace the demo's DEM (dataset ``demo``) in the caller's transaction; returns the
    terrain tiles stored."""
    z, transform = demo_dem(city)
    with tempfile.TemporaryDirectory(prefix="twin-demo-dem-") as folder:
        path = Path(folder) / "demo.tif"
        with rasterio.open(
            path, "w", driver="GTiff", width=z.shape[1], height=z.shape[0], count=1,
            dtype="float32", crs=rasterio.crs.CRS.from_proj4(_TMERC), transform=transform,
        ) as out:  # fmt: skip
            out.write(z, 1)
        result = import_dem(conn, path, dataset=DATASET, provider=PROVIDER)
    return {"terrain_tiles": int(result["tiles"])}
