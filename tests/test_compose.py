"""What a deployer relies on in docker-compose.yml and the Dockerfile.

Nothing here runs Docker: the files are parsed and checked for the promises the
deployment makes (PostGIS is healthy before the API starts, the API finds it, the
data outlive the containers, the image serves as a non-root user with a health check).
Compose variables are resolved as ``docker compose`` would with none of them set,
so the defaults written in the file are what is checked.
"""

import json
import re
import shlex
from itertools import pairwise
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"

_VARIABLE = re.compile(
    r"\$(?:\{(?P<braced>[A-Za-z_]\w*)(?::?-(?P<default>[^}]*))?\}|(?P<bare>[A-Za-z_]\w*))"
)


def _interpolate(value):
    """Resolve ``${VAR:-default}``, ``${VAR-default}``, ``${VAR}``, ``$VAR`` and ``$$``
    with no variable set, as Compose does with an empty environment."""
    if isinstance(value, str):
        parts = value.split("$$")
        resolved = [_VARIABLE.sub(lambda m: m.group("default") or "", part) for part in parts]
        return "$".join(resolved)
    if isinstance(value, dict):
        return {key: _interpolate(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolate(item) for item in value]
    return value


def _load_compose():
    return _interpolate(yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8")))


def _environment(service):
    """A service's environment as a dict, whether written as a mapping or a list."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        pairs = (item.split("=", 1) if "=" in item else (item, None) for item in env)
        env = dict(pairs)
    return {str(key): None if value is None else str(value) for key, value in env.items()}


def _depends_on(service):
    """``depends_on`` as {service: options}, whether written as a list or a mapping."""
    deps = service.get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return {name: options or {} for name, options in deps.items()}


def _database_url(compose):
    url = _environment(compose["services"]["api"]).get("TWIN_DATABASE_URL")
    assert url, "the api service must set TWIN_DATABASE_URL"
    return urlsplit(url)


def _final_stage():
    """Instructions of the last stage of the Dockerfile as (KEYWORD, arguments)."""
    text = DOCKERFILE.read_text(encoding="utf-8")
    logical, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("#") or (not line and not current):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        logical.append(current + line)
        current = ""
    if current:
        logical.append(current)
    instructions = []
    for line in logical:
        keyword, _, arguments = line.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    starts = [i for i, (keyword, _) in enumerate(instructions) if keyword == "FROM"]
    assert starts, "the Dockerfile has no FROM"
    return instructions[starts[-1] :]


def _last(stage, keyword):
    found = [arguments for kw, arguments in stage if kw == keyword]
    return found[-1] if found else None


def _command_words(arguments):
    """Words of a CMD/ENTRYPOINT in exec (JSON) or shell form."""
    if arguments.startswith("["):
        return [str(word) for word in json.loads(arguments)]
    return shlex.split(arguments)


@pytest.fixture(scope="module")
def compose():
    return _load_compose()


def test_compose_file_parses(compose):
    assert isinstance(compose, dict)
    assert {"db", "api"} <= set(compose.get("services") or {})
    assert "version" not in compose, "the version key is obsolete in the Compose spec"


def test_db_uses_an_official_postgis_image(compose):
    image = compose["services"]["db"].get("image", "")
    name, _, tag = image.partition(":")
    assert name in {"postgis/postgis", "docker.io/postgis/postgis"}, image
    assert tag and tag != "latest", f"pin the PostGIS image to a version, not {image!r}"


def test_db_healthcheck_uses_pg_isready(compose):
    healthcheck = compose["services"]["db"].get("healthcheck") or {}
    assert not healthcheck.get("disable"), "the db health check is disabled"
    test = healthcheck.get("test")
    assert test, "the db service needs a healthcheck with a test"
    command = test if isinstance(test, str) else " ".join(str(word) for word in test)
    assert "pg_isready" in command


def test_api_waits_for_a_healthy_db(compose):
    deps = _depends_on(compose["services"]["api"])
    assert "db" in deps, "the api service must depend on db"
    assert deps["db"].get("condition") == "service_healthy"


def test_api_database_url_points_at_the_db_service(compose):
    url = _database_url(compose)
    db_env = _environment(compose["services"]["db"])
    assert url.scheme in {"postgresql", "postgres", "postgresql+psycopg"}
    assert url.hostname == "db"
    assert url.port in {None, 5432}
    assert url.username == db_env.get("POSTGRES_USER", "postgres")
    assert url.password == db_env.get("POSTGRES_PASSWORD")
    # The image creates POSTGRES_DB, defaulting to the user's name.
    expected_db = db_env.get("POSTGRES_DB") or db_env.get("POSTGRES_USER", "postgres")
    assert url.path.lstrip("/") == expected_db


def test_api_listens_on_all_interfaces(compose):
    host = _environment(compose["services"]["api"]).get("TWIN_HOST")
    assert host == "0.0.0.0", "inside a container the API must bind 0.0.0.0, not loopback"


def test_db_data_live_in_a_named_volume(compose):
    declared = compose.get("volumes") or {}
    named = []
    for volume in compose["services"]["db"].get("volumes") or []:
        if isinstance(volume, dict):
            source, target = volume.get("source"), volume.get("target")
            if volume.get("type", "volume") != "volume":
                continue
        else:
            source, _, rest = volume.partition(":")
            target = rest.split(":", 1)[0]
        if source and target == "/var/lib/postgresql/data":
            named.append(source)
    assert named, "mount a volume on /var/lib/postgresql/data of the db service"
    for source in named:
        assert not source.startswith(("/", ".", "~")), f"{source!r} is a bind mount"
        assert source in declared, f"declare the volume {source!r} under top-level volumes"


def test_api_publishes_port_8000(compose):
    container_ports = []
    for port in compose["services"]["api"].get("ports") or []:
        if isinstance(port, dict):
            container_ports.append(int(port["target"]))
        else:
            target = str(port).split("/", 1)[0].rsplit(":", 1)[-1]
            container_ports.append(int(target))
    assert 8000 in container_ports


def test_dockerfile_has_a_healthcheck():
    healthcheck = _last(_final_stage(), "HEALTHCHECK")
    assert healthcheck, "the final stage needs a HEALTHCHECK"
    assert healthcheck.upper() != "NONE"
    assert "/health" in healthcheck


def test_dockerfile_does_not_run_as_root():
    user = _last(_final_stage(), "USER")
    assert user, "the final stage needs a USER line, or the server runs as root"
    assert user.split(":", 1)[0] not in {"root", "0"}


def test_dockerfile_cmd_serves_the_api():
    stage = _final_stage()
    cmd = _last(stage, "CMD")
    assert cmd, "the final stage needs a CMD"
    words = _command_words(cmd)
    entrypoint = _last(stage, "ENTRYPOINT")
    if entrypoint:
        words = _command_words(entrypoint) + words
    pairs = pairwise(words)
    assert any(Path(first).name == "twin" and second == "serve" for first, second in pairs), words


def test_dockerfile_exposes_8000():
    exposed = [arguments.split() for keyword, arguments in _final_stage() if keyword == "EXPOSE"]
    ports = {port.split("/", 1)[0] for line in exposed for port in line}
    assert "8000" in ports
