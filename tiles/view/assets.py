"""The files the 3D view's page loads, all from our own server (a city intranet has no CDN):
deck.gl as pydeck ships it, loaders.gl's MVT and terrain workers from the npm packages
``make setup`` installs (package.json), and the page's own script and style sheet.

loaders.gl runs a tile's parser in a web worker it would otherwise fetch from a CDN; the
worker must be the version of loaders.gl inside the deck.gl bundle, which
``bundle_loader_version`` reads and ``check`` compares with the installed workers'.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import pydeck

HERE = Path(__file__).resolve().parent
# Where `npm ci` put the workers: the repository's root (make setup installs the project
# in place, `pip install -e`), or else the folder twin runs in (the container's /app,
# where the Dockerfile copies them).
_PLACES = (HERE.parent.parent / "node_modules", Path.cwd() / "node_modules")
NODE_MODULES = next((p for p in _PLACES if p.is_dir()), _PLACES[0])
BUNDLE = Path(pydeck.__file__).resolve().parent / "nbextension" / "static" / "index.js"


@dataclass(frozen=True)
class Asset:
    """A file the page loads: where it is, its media type, and the npm package it comes
    from (None for pydeck's bundle and our own files)."""

    path: Path
    media_type: str
    package: str | None = None


def _worker(module: str) -> Asset:
    path = NODE_MODULES / "@loaders.gl" / module / "dist" / f"{module}-worker.js"
    return Asset(path, "text/javascript", f"@loaders.gl/{module}")


# The names the page asks for under /view/static/, and nothing else.
ASSETS: dict[str, Asset] = {
    "deckgl.js": Asset(BUNDLE, "text/javascript"),
    "mvt-worker.js": _worker("mvt"),
    "terrain-worker.js": _worker("terrain"),
    "one-map.js": Asset(HERE / "static" / "one-map.js", "text/javascript"),
    "one-map.css": Asset(HERE / "static" / "one-map.css", "text/css"),
}


def installed_version(package: str) -> str | None:
    """The version of an npm package under node_modules, or None when it is not there."""
    manifest = NODE_MODULES / package / "package.json"
    if not manifest.exists():
        return None
    return str(json.loads(manifest.read_text(encoding="utf-8"))["version"])


@cache
def bundle_loader_version(module: str) -> str | None:
    """The version of loaders.gl's ``module`` loader (mvt, terrain) inside pydeck's bundle:
    the worker it asks for must be that version."""
    text = BUNDLE.read_text(encoding="utf-8")
    # A loader is `{...,id:"mvt",module:"mvt",...}` and then its version, spelt as a
    # variable set just before it: `var X="4.4.3",Y={...Z,...,version:X,worker:!0`.
    where = re.search(rf'id:"{module}",module:"{module}"', text)
    if where is None:
        return None
    after = text[where.end() : where.end() + 400]
    named = re.search(r'var (\w+)="(\d+\.\d+\.\d+)",\w+=\{\.\.\.\w+,dataType:null', after)
    if named is None:  # or the version is set before the loader's object opens
        named = re.search(
            r'var (\w+)="(\d+\.\d+\.\d+)";var \w+=\{dataType:null',
            text[where.start() - 300 : where.start()],
        )
    return named.group(2) if named else None


def check() -> list[str]:
    """What is wrong with the view's files, in words a person can act on; [] when all is
    there and the workers match the bundle."""
    problems = []
    for name, asset in ASSETS.items():
        if not asset.path.exists():
            hint = " (run `make setup`, which runs `npm ci`)" if asset.package else ""
            problems.append(f"{name} is missing: {asset.path}{hint}")
            continue
        if asset.package:
            module = asset.package.rsplit("/", 1)[1]
            wanted, have = bundle_loader_version(module), installed_version(asset.package)
            if wanted and have != wanted:
                problems.append(
                    f"{asset.package} {have} is installed but deck.gl's bundle has loaders.gl"
                    f" {wanted}: set it in package.json and run `npm install`"
                )
    return problems
