"""Show a pydeck map inside a notebook with no internet.

``Deck.show()`` loads deck.gl from a CDN and its page links stylesheets and a base-map
script on outside hosts: offline the map stays blank or waits for a time-out. ``show``
writes the page itself around the deck's JSON, with the deck.gl bundle that ships inside
pydeck inlined and nothing fetched from anywhere. Build decks with ``map_style=None,
map_provider=None``: the one map's own layers are the base.
"""

from __future__ import annotations

import functools
import html
import json
import math
from importlib import resources

import pydeck

PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>the one map</title>
<style>body {{ margin: 0; overflow: hidden; background: #10141c; }}
#map {{ width: 100vw; height: 100vh; }}</style>
<script>{bundle}</script></head>
<body><div id="map"></div>
<script>createDeck({{container: document.getElementById("map"), jsonInput: {deck},
tooltip: {tooltip}}});</script>
</body></html>"""


@functools.cache
def _bundle() -> str:
    """The deck.gl bundle pydeck ships (the same one ``to_html(offline=True)`` inlines)."""
    return resources.files("pydeck").joinpath("nbextension/static/index.js").read_text("utf-8")


def page(deck: pydeck.Deck) -> str:
    """The whole HTML page of ``deck``: deck.gl inlined, no outside address loaded."""
    # "</" would end the <script> early if a feature's name held "</script>".
    deck_json = deck.to_json().replace("</", "<\\/")
    # pydeck keeps the tooltip setting private; its own to_html passes it the same way.
    tooltip = json.dumps(getattr(deck, "_tooltip", True)).replace("</", "<\\/")
    return PAGE.format(bundle=_bundle(), deck=deck_json, tooltip=tooltip)


class Map:
    """A deck shown as a notebook output: an iframe holding its whole page (about 4 MB)."""

    def __init__(self, deck: pydeck.Deck, height: int = 520) -> None:
        self.deck = deck
        self.height = height

    def _repr_html_(self) -> str:
        return (
            f'<iframe width="100%" height="{self.height}" frameborder="0" '
            f'srcdoc="{html.escape(page(self.deck))}"></iframe>'
        )


def show(deck: pydeck.Deck, height: int = 520) -> Map:
    """``deck`` as a notebook output that draws with no internet (the last line of a cell)."""
    return Map(deck, height)


def view_over(
    bbox: tuple[float, float, float, float] | list[float],
    *,
    pitch: float = 0,
    bearing: float = 0,
    width: int = 800,
    height: int = 480,
) -> pydeck.ViewState:
    """A view state that frames ``bbox`` (west, south, east, north, in degrees) in a map
    of about ``width`` × ``height`` pixels."""
    west, south, east, north = bbox
    across = max(east - west, 1e-5)
    # A degree of latitude is 1/cos(latitude) times longer on the map than one of longitude.
    down = max((north - south) / math.cos(math.radians((south + north) / 2)), 1e-5)
    # deck.gl's map: 512 pixels cover the 360° of longitude at zoom 0.
    zoom = min(math.log2(width * 360 / (512 * across)), math.log2(height * 360 / (512 * down)))
    return pydeck.ViewState(
        longitude=(west + east) / 2,
        latitude=(south + north) / 2,
        zoom=round(max(0.0, min(20.0, zoom)), 2),
        pitch=pitch,
        bearing=bearing,
    )
