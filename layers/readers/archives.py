"""Zip archives: a possible zip bomb refused, the member to read chosen (by the layer asked
for), its name read as its maker wrote it, and where GDAL finds it inside the zip.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

from layers.readers.frames import FeatureFrame
from layers.readers.json_text import (
    JSON_TEXT_SUFFIXES,
    NUL_ESCAPE,
    NulFeatures,
    nul_features,
    stream_holds,
)
from layers.readers.tables import CSV_SUFFIXES, decoded, read_csv
from layers.readers.vector import dbf_encoding
from twin.errors import InvalidInput

MAX_UNZIPPED_BYTES = 4 * 1024**3  # a zip that claims more than this is refused
MAX_ZIP_RATIO = 200  # and so is one whose members expand more than this (zip bombs)
VECTOR_SUFFIXES = (".shp", ".gpkg", ".geojson", ".json", ".fgb", ".gml", ".kml", ".tab", ".mif",
                   ".sqlite", ".gdb", ".dxf", ".csv")  # fmt: skip


def open_zip(
    path: Path, *, layer: str | None, name: str
) -> FeatureFrame | tuple[str, str, str | None, str | None, NulFeatures | None]:
    """A CSV member read whole, or where GDAL finds the chosen member."""
    try:
        with zipfile.ZipFile(path) as archive:
            members = [m for m in archive.infolist() if not m.is_dir()]
            total = sum(m.file_size for m in members)
            packed = sum(m.compress_size for m in members) or 1
            if total > MAX_UNZIPPED_BYTES or (
                total > 100 * 1024**2 and total / packed > MAX_ZIP_RATIO
            ):
                raise InvalidInput(
                    f"{name} would unpack to {total / 1024**2:,.0f} MB "
                    f"({total / packed:,.0f} times its size): refused as a possible zip bomb"
                )
            # The names as stored (how GDAL and zipfile find members) and as people read them.
            shown = {m.filename: _member_name(m) for m in members}
            names = [m.filename for m in members if not m.filename.startswith("__MACOSX")]
            data = [n for n in names if n.lower().endswith(VECTOR_SUFFIXES)]
            listed = ", ".join(shown[n] for n in data)
            if not data:
                found = ", ".join(shown[n] for n in names[:8]) or "nothing"
                raise InvalidInput(f"{name} holds no file of a vector format ({found})")
            # A zip of several datasets must say which one by --layer (its name or stem).
            if layer is not None:
                picked = [
                    n
                    for n in data
                    if layer in (n, Path(n).stem, Path(n).name)
                    or layer in (shown[n], Path(shown[n]).stem, Path(shown[n]).name)
                ]
                if not picked:
                    raise InvalidInput(
                        f"{name} holds no dataset {layer!r} ({listed})", option="layer"
                    )
                chosen = picked[0]
                layer = None  # a member is one layer
            elif len(data) > 1:
                raise InvalidInput(
                    f"{name} holds several datasets ({listed}): choose one as the layer",
                    option="layer",
                )
            else:
                chosen = data[0]
            if chosen.lower().endswith(tuple(CSV_SUFFIXES)):
                return read_csv(archive.read(chosen), f"{name}/{shown[chosen]}")
            encoding = None
            if chosen.lower().endswith(".shp"):
                encoding = dbf_encoding(archive.read, names, chosen)
            nul = None
            if chosen.lower().endswith(JSON_TEXT_SUFFIXES):
                with archive.open(chosen) as member:
                    if stream_holds(member, NUL_ESCAPE):
                        nul = nul_features(archive.read(chosen), f"{name}/{shown[chosen]}")
    except zipfile.BadZipFile as exc:
        raise InvalidInput(f"{name} is not a readable zip archive ({exc})") from exc
    return f"/vsizip/{path}/{chosen}", f"{name}/{shown[chosen]}", layer, encoding, nul


def _member_name(member: zipfile.ZipInfo) -> str:
    """A zip member's name as its maker wrote it: many Chinese tools store UTF-8 (or GBK)
    names without the flag that says so, which zipfile then reads as CP437."""
    if member.flag_bits & 0x800:
        return member.filename
    written = decoded(member.filename.encode("cp437"), ("utf-8", "gb18030"))
    return member.filename if written is None else written
