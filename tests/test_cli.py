"""The ``twin`` command as a person uses it, on the test data base."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import psycopg
import pytest
from sqlalchemy.engine import make_url

from tests.helpers import make_data_dir, run_twin


def test_layers_lists_the_catalogue_as_json(demo_url: str):
    result = run_twin("layers", "--json", env={"TWIN_DATABASE_URL": demo_url})
    assert result.returncode == 0, result.stderr
    layers = {layer["name"]: layer for layer in json.loads(result.stdout)}
    assert layers["buildings"]["feature_count"] > 1000
    assert layers["sensors"]["geometry_type"] == "Point"


def test_status_of_a_configured_server_reports_its_schema(demo_url: str):
    result = run_twin("db", "status", env={"TWIN_DATABASE_URL": demo_url})
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["kind"] == "configured" and report["running"] is True
    assert report["schema_revision"] == report["schema_head"]
    assert make_url(demo_url).password not in result.stdout and "***" in report["url"]


def test_serving_on_a_port_in_use_is_a_clear_error(demo_url: str):
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_twin("serve", "--port", str(port), env={"TWIN_DATABASE_URL": demo_url})
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr


def test_unknown_demo_size_is_refused_by_the_command_line():
    result = run_twin("demo", "--size", "huge")
    assert result.returncode == 2
    assert "invalid choice: 'huge'" in result.stderr


def test_status_does_not_change_a_data_base_without_postgis(template_url: str):
    from psycopg import sql

    admin = make_url(template_url).set(database="postgres").render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier("plain"))
        )
    plain = make_url(template_url).set(database="plain").render_as_string(hide_password=False)
    try:
        result = run_twin("db", "status", env={"TWIN_DATABASE_URL": plain})
        assert result.returncode == 1
        assert "has no postgis extension yet" in result.stderr
        with psycopg.connect(plain) as conn:
            assert (
                conn.execute(
                    "SELECT count(*) FROM pg_extension WHERE extname = 'postgis'"
                ).fetchone()[0]
                == 0
            )
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("DROP DATABASE plain WITH (FORCE)")


# kill, Docker and systemd stop a service with SIGTERM; Ctrl+C in a terminal sends SIGINT.
STOPS = pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["TERM", "INT"])


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _twin_process(*args: str, env: dict[str, str], cwd: Path | None = None) -> subprocess.Popen:
    """`twin ARGS…` as its own process, with the test's TWIN_ settings only."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")} | env
    return subprocess.Popen(
        [sys.executable, "-m", "cli", *args],
        env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip


def _wait_for_health(process: subprocess.Popen, port: int) -> None:
    for _ in range(600):
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                return
        except OSError:
            assert process.poll() is None, process.stdout.read()  # type: ignore[union-attr]
            time.sleep(0.2)
    raise AssertionError("the API never answered /health")


def _assert_cluster_stopped(data_dir: Path, output: str) -> None:
    status = run_twin("db", "status", env={"TWIN_DATA_DIR": str(data_dir)})
    if json.loads(status.stdout)["running"]:
        run_twin("db", "stop", env={"TWIN_DATA_DIR": str(data_dir)})
        raise AssertionError(f"the cluster was left running: {output}")


def _stop_when_healthy(process: subprocess.Popen, port: int, stop: signal.Signals) -> str:
    """Send ``stop`` once the server on ``port`` answers /health; its output when it has
    ended (killed if it does not end)."""
    try:
        _wait_for_health(process, port)
        process.send_signal(stop)
        output, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    return output


@STOPS
def test_up_stops_its_cluster_when_terminated(stop: signal.Signals):
    """`twin up` stopped with SIGTERM (kill, Docker, systemd) or SIGINT (Ctrl+C) shuts the
    server down and stops the embedded PostGIS it started, instead of leaving it running."""
    data_dir = make_data_dir("twin-up-")
    port = _free_port()
    up = _twin_process("up", "--size", "small", cwd=data_dir,
                       env={"TWIN_DATA_DIR": str(data_dir), "TWIN_PORT": str(port)})  # fmt: skip
    output = _stop_when_healthy(up, port, stop)
    _assert_cluster_stopped(data_dir, output)
    assert "Finished server process" in output, output  # uvicorn shut down, not cut off
    assert "stopped the embedded PostGIS" in output, output
    assert up.returncode == 128 + stop and "Traceback" not in output, output
    # Start-up ends with the address a person opens: the 3D view.
    assert f"The one map: http://127.0.0.1:{port}/view" in output, output


@STOPS
def test_up_stopped_while_its_new_cluster_starts_stops_it(stop: signal.Signals):
    """Stopped as it starts a new cluster and migrates its schema (the first run takes
    seconds there), `twin up` stops that cluster too."""
    data_dir = make_data_dir("twin-up-")
    up = _twin_process("up", "--size", "small", cwd=data_dir,
                       env={"TWIN_DATA_DIR": str(data_dir), "TWIN_PORT": str(_free_port())})  # fmt: skip
    try:
        # The new cluster's server runs: twin is connecting to it and migrating.
        deadline = time.monotonic() + 120
        while not (
            (data_dir / "cluster.json").exists() and (data_dir / "pg" / "postmaster.pid").exists()
        ):
            assert up.poll() is None, up.stdout.read()  # type: ignore[union-attr]
            assert time.monotonic() < deadline, "no cluster started in 120 s"
            time.sleep(0.02)
        up.send_signal(stop)
        output, _ = up.communicate(timeout=60)
    finally:
        if up.poll() is None:
            up.kill()
    _assert_cluster_stopped(data_dir, output)
    assert up.returncode == 128 + stop and "Traceback" not in output, output


@STOPS
def test_serve_shuts_down_on_a_stop_signal(demo_url: str, stop: signal.Signals):
    """`twin serve` ends as a server does on SIGTERM or Ctrl+C: shut down, no traceback.
    Behind a proxy, the view's address it prints is the public one people open."""
    port = _free_port()
    # No sweep: it would supervise the shared demo's overdue incidents.
    env = {"TWIN_DATABASE_URL": demo_url, "TWIN_SWEEP_INTERVAL_S": "0",
           "TWIN_PUBLIC_URL": "https://map.example.org/twin/"}  # fmt: skip
    server = _twin_process("serve", "--port", str(port), env=env)
    output = _stop_when_healthy(server, port, stop)
    assert "Application shutdown complete" in output, output
    assert server.returncode == 128 + stop and "Traceback" not in output, output
    assert "The one map: https://map.example.org/twin/view" in output, output
    assert f"listening on 127.0.0.1:{port}" in output, output


def test_a_port_out_of_range_is_one_line_not_a_traceback():
    for command in (("serve", "--port", "99999"), ("up", "--port", "-1")):
        result = run_twin(*command)
        assert result.returncode == 2
        assert "ports are 1 to 65535" in result.stderr and "Traceback" not in result.stderr


def test_serve_runs_several_api_processes_on_one_port(demo_url: str):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWIN_")}
    env.update(TWIN_DATABASE_URL=demo_url, TWIN_WORKERS="2", TWIN_SWEEP_INTERVAL_S="0")
    server = subprocess.Popen([sys.executable, "-m", "cli", "serve", "--port", str(port)],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)  # fmt: skip
    try:
        deadline, answered = time.monotonic() + 90, 0
        while time.monotonic() < deadline and answered < 6:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as r:
                    answered += r.status == 200
            except OSError:
                time.sleep(0.3)
        assert answered == 6
    finally:
        server.send_signal(signal.SIGTERM)
        out, _ = server.communicate(timeout=60)
    started = set(re.findall(r"Started server process \[(\d+)\]", out))
    assert len(started) == 2, out[-2000:]
    assert "Traceback" not in out


def test_a_bbox_west_of_greenwich_is_taken_after_a_space(fresh_url: str):
    # argparse reads "-122.5,37.7,..." as an option (a minus, then no plain number) and
    # said "--bbox: expected one argument" (door test D15): half the world's boxes.
    box = "-122.5,37.7,-122.4,37.8"
    for given in (["--bbox", box], [f"--bbox={box}"]):
        result = run_twin("tiles", "seed", *given, "--zooms", "10", "--layers", "buildings",
                          "--json", env={"TWIN_DATABASE_URL": fresh_url})  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert json.loads(result.stdout)["bbox"] == [-122.5, 37.7, -122.4, 37.8]
    wrong = run_twin("tiles", "seed", "--bbox", "-122.5,37.7", env={"TWIN_DATABASE_URL": fresh_url})
    assert wrong.returncode == 2 and "give four numbers" in wrong.stderr
