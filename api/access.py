"""Who may call what. Every route names its audience with one of these dependencies.

``public``: anyone, no key (health, the catalogue, later the open map data).
``staff``: dispatch staff, engineers and trusted external systems, with an API key
(``X-API-Key``) listed in ``TWIN_API_KEYS``. Later issues add routes behind ``staff``.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from twin.errors import TwinError


class NotAllowed(TwinError):
    """The caller has no key, or a key that is not allowed here."""


async def public() -> None:
    """Open to anyone: the route serves nothing personal. (Async: no thread hop for nothing.)"""


def staff(
    request: Request, x_api_key: Annotated[str | None, Header(alias="X-API-Key")] = None
) -> str:
    """Staff or a trusted system with a configured API key; returns the caller's name."""
    keys: dict[str, str] = request.app.state.settings.api_keys
    caller = keys.get(x_api_key or "")
    if caller is None:
        raise NotAllowed("this route needs a valid X-API-Key header")
    return caller


Public = Depends(public)
Staff = Annotated[str, Depends(staff)]
