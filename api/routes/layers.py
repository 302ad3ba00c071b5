"""The layer catalogue (数据清单): what the one map holds, who provides and owns it."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Path

from api.access import Public
from api.deps import Connection
from layers.datasets import list_datasets
from twin import catalogue

router = APIRouter(prefix="/layers", tags=["layers"])


@router.get("", dependencies=[Public], summary="List the layer catalogue (public)")
def list_layers(conn: Connection) -> dict[str, Any]:
    """Every layer with its kind, geometry type, provider, owner, licence, extent, count."""
    layers = catalogue.list_layers(conn)
    return {"layers": layers, "count": len(layers)}


@router.get("/{name}", dependencies=[Public], summary="One layer's catalogue entry (public)")
def get_layer(conn: Connection, name: str = Path(max_length=63)) -> dict[str, Any]:
    """One layer's entry, including its property schema; 404 when unknown."""
    return catalogue.get_layer(conn, name)


@router.get("/{name}/datasets", dependencies=[Public], summary="A layer's datasets (public)")
def get_datasets(conn: Connection, name: str = Path(max_length=63)) -> dict[str, Any]:
    """The datasets a layer holds (one per import source), with feature counts; 404 when
    the layer is unknown."""
    datasets = list_datasets(conn, name)
    return {"layer": name, "datasets": datasets, "count": len(datasets)}
