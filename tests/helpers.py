"""Small helpers shared by the tests."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import shapely.geometry

from twin.settings import ApiSettings, DatabaseSettings, ImportSettings, Settings

_made: list[Path] = []


def make_data_dir(prefix: str) -> Path:
    """A folder the PostgreSQL server user can reach when the tests run as root; removed
    at the end of the session (remove_data_dirs)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    _made.append(path)
    return path


def remove_data_dirs() -> None:
    """Remove the folders make_data_dir made, so a test run leaves nothing in /tmp."""
    while _made:
        shutil.rmtree(_made.pop(), ignore_errors=True)


def settings_for(
    data_dir: Path,
    *,
    database: dict[str, object] | None = None,
    api: dict[str, object] | None = None,
    imports: dict[str, object] | None = None,
) -> Settings:
    """Settings on the embedded cluster in ``data_dir`` that ignore the developer's .env
    file, with each concern's ``overrides`` (``api={"api_keys": …}``). The server's own
    SLA sweep is off unless a test turns it on: it would change incidents under a test."""
    database = {"data_dir": data_dir, "database_url": None, **(database or {})}
    api = {"sweep_interval_s": 0, **(api or {})}
    return Settings(
        database=DatabaseSettings(_env_file=None, **database),  # type: ignore[arg-type]
        api=ApiSettings(_env_file=None, **api),  # type: ignore[arg-type]
        imports=ImportSettings(_env_file=None, **(imports or {})),  # type: ignore[arg-type]
    )


def run_twin(
    *args: str, env: dict[str, str] | None = None, user: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the real ``twin`` command in a child process, as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "cli", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=make_data_dir("twin-cwd-"),  # no .env file of the developer's
        user=user,
        timeout=600,
        check=False,
    )


def write_geojson(path: Path, features: list[tuple[dict, object]]) -> Path:
    """A GeoJSON file of (properties, shapely geometry or None) features."""
    path.write_text(
        json.dumps(
            {
                "type": "FeatureCollection",
                "features": [
                    {
                        "type": "Feature",
                        "properties": props,
                        "geometry": None if geom is None else shapely.geometry.mapping(geom),
                    }
                    for props, geom in features
                ],
            },
            ensure_ascii=False,
        )
    )
    return path


@contextmanager
def serve_app(app: Any) -> Iterator[str]:
    """The app served by uvicorn in a thread on a free loopback port, for clients that
    speak HTTP themselves (GDAL, OWSLib, a browser, concurrent load); its base URL."""
    import uvicorn

    from bench.timing import free_port

    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start"
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)


def demo_water_mains(url: str, limit: int) -> list[int]:
    """Ids of the demo city's water mains in service (not service pipes or hydrant
    laterals), lowest first: where tests look for a burst to isolate."""
    import psycopg

    with psycopg.connect(url) as conn:
        return [r[0] for r in conn.execute(
            "SELECT id FROM pipes WHERE network = 'water' AND dataset = 'demo'"
            " AND properties->>'role' IS NULL AND status = 'in_service' ORDER BY id LIMIT %s",
            (limit,),
        )]  # fmt: skip
