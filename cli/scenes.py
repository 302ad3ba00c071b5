"""``twin scene create|drop``: register or remove a scene layer (个性化场景)."""

from __future__ import annotations

import argparse

from cli.common import console, prepare
from layers.scenes import create_scene, drop_scene
from twin import db
from twin.errors import TwinError
from twin.settings import Settings


def cmd_scene_create(settings: Settings, args: argparse.Namespace) -> int:
    """Register a scene layer."""
    properties = {}
    for item in args.property:
        name, sep, kind = item.partition(":")
        if not sep:
            raise TwinError(f"--property {item!r}: write it as NAME:TYPE (e.g. count:integer)")
        properties[name.strip()] = kind.strip()
    with db.connect(prepare(settings)) as conn:
        layer = create_scene(
            conn,
            args.name,
            geometry_type=args.geometry,
            properties=properties,
            title=args.title,
            owner_unit=args.owner,
            description=args.description,
        )
    console.print(
        f"scene {layer['name']} registered ({layer['geometry_type']}): "
        f"import features with 'twin import {layer['name']} FILE'",
        highlight=False,
    )
    return 0


def cmd_scene_drop(settings: Settings, args: argparse.Namespace) -> int:
    """Remove a scene layer."""
    with db.connect(prepare(settings)) as conn:
        drop_scene(conn, args.name)
    console.print(f"scene {args.name} removed", highlight=False)
    return 0
