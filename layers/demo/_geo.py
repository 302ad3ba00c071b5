"""Geometry helpers for the demo city: metric frame, smooth fields, polyline splitting.

Everything in the generator works in a local transverse Mercator frame in metres
centred on the demo city; :func:`to_lonlat` converts once at the very end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import shapely
from pyproj import Transformer

CENTRE_LON = 121.40
CENTRE_LAT = 31.24

# A transverse Mercator centred on the city: scale error < 1e-5 over 40 km, so
# metres in the frame are metres on the ground for all practical purposes.
_TMERC = (
    f"+proj=tmerc +lat_0={CENTRE_LAT} +lon_0={CENTRE_LON} +k=1 +x_0=0 +y_0=0 "
    "+ellps=GRS80 +units=m +no_defs"
)
_TRANSFORMER = Transformer.from_crs(_TMERC, "EPSG:4326", always_xy=True)


def to_lonlat(geoms: np.ndarray) -> np.ndarray:
    """Return a copy of ``geoms`` (metres in the local frame) in lon/lat EPSG:4326."""

    def _fn(xy: np.ndarray) -> np.ndarray:
        lon, lat = _TRANSFORMER.transform(xy[:, 0], xy[:, 1])
        return np.column_stack([lon, lat])

    return shapely.transform(geoms, _fn)


@dataclass(frozen=True)
class Warp:
    """A smooth, fold-free displacement field that bends the design grid.

    The street grid is laid out as straight lines in a "design" plane and then
    warped, so roads curve gently and change bearing across the city, as real
    Shanghai streets do, while the topology stays a clean grid.
    """

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    ax: np.ndarray
    ay: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> Warp:
        """Draw a warp whose total shear stays < 0.5, so it never folds."""
        wavelengths = np.array([5200.0, 3100.0, 1700.0])
        amplitudes = np.array([230.0, 110.0, 40.0])
        theta = rng.uniform(0, np.pi, size=3)
        k = 2 * np.pi / wavelengths
        return cls(
            kx=k * np.cos(theta),
            ky=k * np.sin(theta),
            phase=rng.uniform(0, 2 * np.pi, size=3),
            ax=amplitudes * rng.uniform(0.6, 1.0, size=3),
            ay=amplitudes * rng.uniform(0.6, 1.0, size=3),
        )

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        """Warp an (n, 2) array of design coordinates into the metric frame."""
        xy = np.asarray(xy, dtype=float)
        arg = xy[:, :1] * self.kx + xy[:, 1:2] * self.ky + self.phase
        s = np.sin(arg)
        c = np.cos(arg)
        return np.column_stack([xy[:, 0] + s @ self.ax, xy[:, 1] + c @ self.ay])


@dataclass(frozen=True)
class Elevation:
    """Smooth ground elevation (m above Wusong datum): Shanghai is flat, 2.5-5.5 m."""

    kx: np.ndarray
    ky: np.ndarray
    phase: np.ndarray
    amp: np.ndarray

    @classmethod
    def random(cls, rng: np.random.Generator) -> Elevation:
        """Draw a few long-wavelength undulations."""
        wl = np.array([9000.0, 4200.0, 1900.0])
        theta = rng.uniform(0, np.pi, size=3)
        k = 2 * np.pi / wl
        return cls(
            kx=k * np.cos(theta),
            ky=k * np.sin(theta),
            phase=rng.uniform(0, 2 * np.pi, size=3),
            amp=np.array([0.8, 0.45, 0.2]),
        )

    def __call__(self, xy: np.ndarray) -> np.ndarray:
        """Ground elevation at an (n, 2) array of metric points."""
        xy = np.asarray(xy, dtype=float).reshape(-1, 2)
        arg = xy[:, :1] * self.kx + xy[:, 1:2] * self.ky + self.phase
        return np.clip(4.0 + np.sin(arg) @ self.amp, 2.5, 5.5)


@dataclass
class Polylines:
    """Ragged collection of polylines stored flat, for vectorised interpolation.

    ``xy[off[i]:off[i+1]]`` are the vertices of polyline ``i``; ``c`` holds the
    cumulative length at each vertex (0 at the first vertex of each polyline).
    """

    xy: np.ndarray
    c: np.ndarray
    off: np.ndarray

    @property
    def n(self) -> int:
        """Number of polylines."""
        return len(self.off) - 1

    @property
    def length(self) -> np.ndarray:
        """Length of each polyline."""
        return self.c[self.off[1:] - 1]

    @property
    def owner(self) -> np.ndarray:
        """Polyline index of every vertex."""
        return np.repeat(np.arange(self.n), np.diff(self.off))

    def geoms(self, shift: np.ndarray | None = None) -> np.ndarray:
        """LineStrings of all polylines, optionally translated by ``shift``."""
        xy = self.xy if shift is None else self.xy + shift
        return shapely.linestrings(xy, indices=self.owner)

    def _keys(self) -> np.ndarray:
        # Strictly increasing global key: polyline index dominates the position.
        return self.owner * _BIG + self.c

    def interpolate(self, line: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Points at distance ``s`` along polylines ``line`` and the unit tangent there."""
        keys = self._keys()
        q = line * _BIG + s
        i = np.searchsorted(keys, q, side="right") - 1
        i = np.clip(i, self.off[line], self.off[line + 1] - 2)
        seg = self.xy[i + 1] - self.xy[i]
        seglen = np.maximum(self.c[i + 1] - self.c[i], 1e-9)
        t = np.clip((s - self.c[i]) / seglen, 0.0, 1.0)
        pt = self.xy[i] + t[:, None] * seg
        return pt, seg / seglen[:, None]

    def pieces(
        self,
        line: np.ndarray,
        s0: np.ndarray,
        s1: np.ndarray,
        start_xy: np.ndarray,
        end_xy: np.ndarray,
        shift: np.ndarray,
        reverse: np.ndarray | None = None,
    ) -> np.ndarray:
        """Sub-polylines of ``line`` between ``s0`` < ``s1`` as LineStrings.

        The first and last vertex are taken verbatim from ``start_xy``/``end_xy``
        (the node points) so that pipe ends coincide bit-for-bit with nodes;
        interior vertices come from the polyline translated by ``shift``.
        ``reverse`` flips the vertex order of selected pieces (gravity flow).
        """
        keys = self._keys()
        i0 = np.searchsorted(keys, line * _BIG + s0, side="right")
        i1 = np.searchsorted(keys, line * _BIG + s1, side="left")
        # Drop interior vertices that are within 5 cm of the piece ends.
        i1 = np.maximum(i1, i0)
        counts = i1 - i0 + 2
        total = int(counts.sum())
        piece = np.repeat(np.arange(len(line)), counts)
        starts = np.cumsum(counts) - counts
        k = np.arange(total) - starts[piece]
        if reverse is not None:
            k = np.where(reverse[piece], counts[piece] - 1 - k, k)
        out = np.empty((total, 2))
        first = k == 0
        last = k == counts[piece] - 1
        mid = ~(first | last)
        out[first] = start_xy[piece[first]]
        out[last] = end_xy[piece[last]]
        vi = i0[piece[mid]] + k[mid] - 1
        out[mid] = self.xy[vi] + shift
        return shapely.linestrings(out, indices=piece)


_BIG = 1.0e6


def rect_coords(
    cx: np.ndarray, cy: np.ndarray, w: np.ndarray, h: np.ndarray, ang: np.ndarray
) -> np.ndarray:
    """Closed rings (n, 5, 2) of rectangles centred at cx, cy rotated by ``ang``."""
    hx = np.array([-0.5, 0.5, 0.5, -0.5, -0.5])
    hy = np.array([-0.5, -0.5, 0.5, 0.5, -0.5])
    lx = w[:, None] * hx
    ly = h[:, None] * hy
    ca = np.cos(ang)[:, None]
    sa = np.sin(ang)[:, None]
    x = cx[:, None] + lx * ca - ly * sa
    y = cy[:, None] + lx * sa + ly * ca
    return np.stack([x, y], axis=-1)


def as_multipolygon(geoms: np.ndarray) -> np.ndarray:
    """Coerce polygons / collections to MultiPolygons (dropping slivers of lower dim)."""
    out = np.empty(len(geoms), dtype=object)
    for i, g in enumerate(geoms):
        if g.geom_type == "MultiPolygon":
            out[i] = g
        elif g.geom_type == "Polygon":
            out[i] = shapely.MultiPolygon([g])
        else:
            polys = [p for p in shapely.get_parts(g) if p.geom_type == "Polygon"]
            out[i] = shapely.MultiPolygon(polys)
    return out


def multipolygons_fast(polys: np.ndarray) -> np.ndarray:
    """Wrap an array of Polygons into single-part MultiPolygons, vectorised."""
    return shapely.multipolygons(polys, indices=np.arange(len(polys)))
