"""The embedded PostGIS cluster: made, reused, stopped, and refusing what is not ours."""

from __future__ import annotations

import json
import os
import pwd
import socket
import stat
from pathlib import Path

import psycopg
import pytest

from cli import main
from tests.helpers import make_data_dir, run_twin
from twin.embedded import EmbeddedCluster


def test_start_makes_a_cluster_with_postgis_and_reuses_it(tmp_path: Path):
    data_dir = make_data_dir("twin-start-")
    started = run_twin("db", "start", env={"TWIN_DATA_DIR": str(data_dir)})
    assert started.returncode == 0, started.stderr
    assert "data base ready" in started.stderr
    url = run_twin("db", "url", env={"TWIN_DATA_DIR": str(data_dir)}).stdout.strip()
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT postgis_lib_version()").fetchone()[0].startswith("3")
        assert conn.execute("SELECT to_regclass('buildings')").fetchone()[0] == "buildings"
        conn.execute("CREATE TABLE kept (x int)")
        conn.execute("INSERT INTO kept VALUES (42)")
    # The state file holds the password: only its owner may read it.
    mode = stat.S_IMODE((data_dir / "cluster.json").stat().st_mode)
    assert mode == 0o600

    # Each stream holds whole lines: what `twin db stop` says is a message (stderr), the
    # status report is JSON alone on stdout, so `… 2>&1` and `| jq` both read cleanly.
    for said in ("stopped", "not running"):
        stopped = run_twin("db", "stop", env={"TWIN_DATA_DIR": str(data_dir)})
        assert stopped.returncode == 0 and (stopped.stdout, stopped.stderr) == ("", said + "\n")
    status = run_twin("db", "status", env={"TWIN_DATA_DIR": str(data_dir)})
    assert status.returncode == 1 and status.stderr == "" and status.stdout.endswith("}\n")
    assert json.loads(status.stdout)["running"] is False

    # Started again: same data base, data still there.
    assert run_twin("db", "start", env={"TWIN_DATA_DIR": str(data_dir)}).returncode == 0
    url_again = run_twin("db", "url", env={"TWIN_DATA_DIR": str(data_dir)}).stdout.strip()
    with psycopg.connect(url_again) as conn:
        assert conn.execute("SELECT x FROM kept").fetchone()[0] == 42
    EmbeddedCluster(data_dir).stop()


def test_a_folder_that_is_not_a_cluster_is_refused_and_left_alone():
    data_dir = make_data_dir("twin-foreign-")
    (data_dir / "pg").mkdir()
    precious = data_dir / "pg" / "precious.txt"
    precious.write_text("do not delete")
    result = run_twin("db", "start", env={"TWIN_DATA_DIR": str(data_dir)})
    assert result.returncode == 1
    assert "refusing to touch it" in result.stderr
    assert "Traceback" not in result.stderr
    assert precious.read_text() == "do not delete"


def test_an_occupied_port_is_a_clear_error():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        result = run_twin(
            "db", "start",
            env={"TWIN_DATA_DIR": str(make_data_dir("twin-port-")), "TWIN_PG_PORT": str(port)},
        )  # fmt: skip
    assert result.returncode == 1
    assert f"port {port}" in result.stderr and "already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://nobody:wrong@127.0.0.1:1/nothing", "cannot use the data base"),
        ("mysql://root@localhost/city", "must be a postgresql:// URL"),
        ("not a url at all", "not a data base URL"),
    ],
)
def test_a_wrong_database_url_is_a_one_line_error(url: str, expected: str):
    result = run_twin("db", "status", env={"TWIN_DATABASE_URL": url})
    assert result.returncode == 1
    assert expected in result.stderr
    assert "Traceback" not in result.stderr
    assert "wrong" not in result.stderr  # the password is never printed


def test_missing_postgis_says_what_to_install(tmp_path: Path):
    real = EmbeddedCluster(tmp_path).bin_dir
    fake_bin = make_data_dir("twin-fakebin-")
    for tool in ("initdb", "pg_ctl", "postgres"):
        (fake_bin / tool).symlink_to(real / tool)
    empty_share = make_data_dir("twin-share-")
    pg_config = fake_bin / "pg_config"
    pg_config.write_text(f"#!/bin/sh\necho {empty_share}\n")
    pg_config.chmod(0o755)
    data_dir = make_data_dir("twin-nopostgis-")
    result = run_twin(
        "db", "start", env={"TWIN_DATA_DIR": str(data_dir), "TWIN_PG_BIN_DIR": str(fake_bin)}
    )
    assert result.returncode == 1
    assert "PostGIS is not installed" in result.stderr
    assert "postgresql-15-postgis-3" in result.stderr
    assert not (data_dir / "pg").exists()


def test_missing_postgresql_says_what_to_install():
    data_dir = make_data_dir("twin-nopg-")
    result = run_twin(
        "db", "start", env={"TWIN_DATA_DIR": str(data_dir), "TWIN_PG_BIN_DIR": "/nonexistent"}
    )
    assert result.returncode == 1
    assert "initdb, pg_ctl" in result.stderr and "not found in /nonexistent" in result.stderr
    assert "make setup" in result.stderr and "postgresql-17-postgis-3 on Debian 13" in result.stderr


def test_a_cluster_folder_owned_by_someone_else_is_refused_and_left_alone():
    if os.geteuid() != 0:
        pytest.skip("only root can give a folder to another user")
    data_dir = make_data_dir("twin-owned-")
    cluster = EmbeddedCluster(data_dir)
    cluster.ensure_running()
    cluster.stop()
    stranger = pwd.getpwnam("nobody")
    pgdata = data_dir / "pg"
    os.chown(pgdata, stranger.pw_uid, stranger.pw_gid)
    files_before = sorted(p.name for p in pgdata.iterdir())
    result = run_twin("db", "start", env={"TWIN_DATA_DIR": str(data_dir)})
    assert result.returncode == 1
    assert "belongs to user 'nobody'" in result.stderr and "refusing" in result.stderr
    assert "Traceback" not in result.stderr
    assert sorted(p.name for p in pgdata.iterdir()) == files_before
    assert pgdata.stat().st_uid == stranger.pw_uid


def test_bad_setting_names_the_variable(capsys, monkeypatch):
    monkeypatch.setenv("TWIN_PG_PORT", "not-a-port")
    assert main(["db", "status"]) == 1
    assert "TWIN_PG_PORT" in capsys.readouterr().err


def test_a_data_folder_holding_other_files_is_not_taken_over():
    data_dir = make_data_dir("twin-others-")
    (data_dir / "notes.txt").write_text("mine")
    result = run_twin("db", "start", env={"TWIN_DATA_DIR": str(data_dir)})
    assert result.returncode == 1
    assert "already holds other files (notes.txt)" in result.stderr
    assert "making a new, empty one" not in result.stderr + result.stdout  # it does not
    assert sorted(p.name for p in data_dir.iterdir()) == [".lock", "notes.txt"]


def test_a_setting_that_is_not_json_is_one_line():
    result = run_twin("layers", env={"TWIN_API_KEYS": "notjson"})
    assert result.returncode == 1
    assert "bad setting" in result.stderr and "TWIN_API_KEYS is not JSON" in result.stderr
    assert "Traceback" not in result.stderr and "EnvSettingsSource" not in result.stderr
    port = run_twin("layers", env={"TWIN_PORT": "abc"})
    assert "TWIN_PORT='abc': must be a valid integer" in port.stderr
    inside = run_twin("layers", env={"TWIN_API_KEYS": '{"k": 1}'})
    assert "TWIN_API_KEYS (at 'k')='1'" in inside.stderr and "TWIN_API_KEYS_K" not in inside.stderr


def test_a_negative_seed_is_refused_by_the_command_line():
    result = run_twin("demo", "--seed", "-1")
    assert result.returncode == 2 and "must be 0 or more" in result.stderr


def test_an_import_with_a_mistyped_crs_or_file_makes_no_cluster(tmp_path: Path):
    """Mistakes found without the data base are said before one is made or started."""
    data_dir = make_data_dir("twin-nocluster-")
    (tmp_path / "b.geojson").write_text('{"type": "FeatureCollection", "features": []}')
    env = {"TWIN_DATA_DIR": str(data_dir)}
    bad_crs = run_twin("import", "buildings", str(tmp_path / "b.geojson"), "--crs", "FOO", env=env)
    assert bad_crs.returncode == 1 and "unknown CRS 'FOO'" in bad_crs.stderr
    missing = run_twin("import", "buildings", str(tmp_path / "none.gpkg"), env=env)
    assert missing.returncode == 1 and "no file at" in missing.stderr
    assert list(data_dir.iterdir()) == []
    assert "making a new, empty one" not in bad_crs.stderr + missing.stderr
