"""Pipe networks over HTTP: connectivity, traces, valve isolation, bursts and the
excavation check. For staff (``query_networks``; a burst needs ``operate_networks``): the
networks under a city are not open data. Thin: twin.network does the work.
"""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import FastJSON

router = APIRouter(tags=["pipe networks"], default_response_class=FastJSON)
