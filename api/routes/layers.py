"""The layer catalogue (数据清单): what the one map holds, who provides and owns it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path, Request

from api.access import Public
from api.deps import Connection, catalogue_of
from layers.datasets import list_datasets

router = APIRouter(prefix="/layers", tags=["layers"])


@router.get("", dependencies=[Public], summary="List the layer catalogue (public)")
def list_layers(request: Request, conn: Connection) -> dict[str, Any]:
    """Every layer with its kind, geometry type, provider, owner, licence, extent, count."""
    layers = list(catalogue_of(request, conn).entries.values())
    return {"layers": layers, "count": len(layers)}


@router.get("/{name}", dependencies=[Public], summary="One layer's catalogue entry (public)")
def get_layer(
    request: Request, conn: Connection, name: str = Path(max_length=63)
) -> dict[str, Any]:
    """One layer's entry, including its property schema; 404 when unknown."""
    return catalogue_of(request, conn).entry(name)


@router.get("/{name}/datasets", dependencies=[Public], summary="A layer's datasets (public)")
def get_datasets(conn: Connection, name: str = Path(max_length=63)) -> dict[str, Any]:
    """The datasets a layer holds (one per import source), with feature counts; 404 when
    the layer is unknown."""
    datasets = list_datasets(conn, name)
    return {"layer": name, "datasets": datasets, "count": len(datasets)}
