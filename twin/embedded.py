"""The embedded PostgreSQL+PostGIS cluster: the default data base when none is configured.

The cluster lives in ``<data_dir>/pg`` and is made with the machine's own ``initdb`` and
``pg_ctl``. Its port, user and password are kept in ``<data_dir>/cluster.json`` (mode 0600).
PostgreSQL refuses to run as root, so when twin runs as root the server runs as an
unprivileged user (``postgres`` by default) that owns ``<data_dir>/pg``.

Nothing here ever deletes a data folder: a folder that is not ours is refused, not replaced.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import pwd
import re
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import psycopg

from twin.errors import SetupError

DATABASE = "twin"
SUPERUSER = "twin"
INSTALL_HINT = (
    "install PostgreSQL and PostGIS (`make setup` does; by hand on Debian and Ubuntu: apt-get"
    " install postgresql-N-postgis-3 for PostgreSQL N: postgresql-15-postgis-3 on Debian 12,"
    " postgresql-17-postgis-3 on Debian 13, postgresql-16-postgis-3 on Ubuntu 24.04), "
    "or set TWIN_DATABASE_URL to a PostGIS server"
)


def postgis_hint(bin_dir: Path) -> str:
    """What to install for PostGIS beside the PostgreSQL in ``bin_dir``: its own major's
    package when the server says which it is."""
    try:
        version = subprocess.run(
            [str(bin_dir / "postgres"), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except (OSError, subprocess.SubprocessError):
        version = ""
    found = re.search(r"\(PostgreSQL\) (\d+)", version)
    if found is None:
        return INSTALL_HINT
    return (
        f"install it for PostgreSQL {found[1]} (`make setup` does; on Debian and Ubuntu: "
        f"apt-get install postgresql-{found[1]}-postgis-3), or set TWIN_DATABASE_URL to a "
        "PostGIS server"
    )


# Tuned for one machine that also runs the API: bulk loads want WAL room and sort memory.
SERVER_CONFIG = {
    "listen_addresses": "'127.0.0.1'",
    "unix_socket_directories": "''",
    "shared_buffers": "'1GB'",
    "work_mem": "'64MB'",
    "maintenance_work_mem": "'1GB'",
    "max_wal_size": "'8GB'",
    "max_connections": "200",
    "synchronous_commit": "off",
    "jit": "off",
    "log_min_messages": "warning",
}


@dataclass
class ClusterState:
    """What a client needs to reach the cluster, saved beside it."""

    port: int
    user: str
    password: str
    database: str

    def url(self) -> str:
        """The SQLAlchemy/psycopg URL of the cluster's data base."""
        return f"postgresql://{self.user}:{self.password}@127.0.0.1:{self.port}/{self.database}"


def find_bin_dir(configured: Path | None = None) -> Path:
    """The folder holding ``initdb``, ``pg_ctl`` and ``postgres``.

    The configured folder only, when there is one; otherwise ``PATH``, then the newest
    Debian ``/usr/lib/postgresql/*/bin``.
    """
    candidates: list[Path] = []
    if configured is not None:
        candidates.append(Path(configured))  # told where: look nowhere else
    else:
        found = shutil.which("initdb")
        if found:
            candidates.append(Path(found).resolve().parent)
        candidates.extend(
            sorted(
                Path("/usr/lib/postgresql").glob("*/bin"),
                key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
                reverse=True,
            )
        )
    for folder in candidates:
        if all((folder / tool).exists() for tool in ("initdb", "pg_ctl", "postgres")):
            return folder
    where = f" in {configured}" if configured else ""
    raise SetupError(
        f"PostgreSQL server programs (initdb, pg_ctl) not found{where}: {INSTALL_HINT}"
    )


def postgis_available(bin_dir: Path) -> bool:
    """Whether the PostGIS extension is installed for the PostgreSQL in ``bin_dir``."""
    share = _share_dir(bin_dir)
    return (share / "extension" / "postgis.control").exists()


def _share_dir(bin_dir: Path) -> Path:
    pg_config = bin_dir / "pg_config"
    if pg_config.exists():
        out = subprocess.run(
            [str(pg_config), "--sharedir"], capture_output=True, text=True, check=False
        )
        if out.returncode == 0 and out.stdout.strip():
            return Path(out.stdout.strip())
    # Debian layout: /usr/lib/postgresql/15/bin -> /usr/share/postgresql/15
    return Path("/usr/share/postgresql") / bin_dir.parent.name


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_in_use(port: int) -> bool:
    """Whether something accepts connections on 127.0.0.1:port."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


class EmbeddedCluster:
    """A private PostgreSQL+PostGIS cluster in a data folder, started on demand."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        bin_dir: Path | None = None,
        server_user: str = "postgres",
    ) -> None:
        self.data_dir = Path(data_dir).absolute()
        self.pgdata = self.data_dir / "pg"
        self.state_file = self.data_dir / "cluster.json"
        self.log_file = self.pgdata / "server.log"
        self.requested_port = port
        self._bin_dir_setting = bin_dir
        self._bin_dir: Path | None = None
        self.server_user = server_user

    # -- public operations -------------------------------------------------------------

    @property
    def bin_dir(self) -> Path:
        """The PostgreSQL programs folder, found once."""
        if self._bin_dir is None:
            self._bin_dir = find_bin_dir(self._bin_dir_setting)
        return self._bin_dir

    def is_initialised(self) -> bool:
        """Whether the data folder already holds our cluster."""
        return (self.pgdata / "PG_VERSION").exists() and self.state_file.exists()

    def is_running(self) -> bool:
        """Whether the cluster's server is up (``pg_ctl status``)."""
        if not (self.pgdata / "PG_VERSION").exists():
            return False
        out = self._pg(["pg_ctl", "status", "-D", str(self.pgdata)], check=False)
        return out.returncode == 0

    def state(self) -> ClusterState:
        """The saved port, user and password; raises when the cluster was never made."""
        if not self.state_file.exists():
            raise SetupError(f"no embedded cluster in {self.data_dir}: run 'twin db start'")
        try:
            return ClusterState(**json.loads(self.state_file.read_text()))
        except (ValueError, TypeError) as exc:
            raise SetupError(f"{self.state_file} is damaged ({exc}); it is not rewritten") from exc

    def ensure_running(self) -> str:
        """Make (first time) and start the cluster if needed; return its data base URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with self._lock():
            if not self.is_initialised():
                self._initialise()
            state = self.state()
            self._check_owner()
            if not self.is_running():
                state = self._start(state)
            self._ensure_database(state)
            return state.url()

    def stop(self) -> bool:
        """Stop the server; returns False when it was not running."""
        if not self.is_running():
            return False
        with self._lock():
            self._pg(["pg_ctl", "stop", "-D", str(self.pgdata), "-m", "fast", "-w"])
        return True

    def status(self) -> dict[str, object]:
        """A small report for ``twin db status``."""
        report: dict[str, object] = {
            "data_dir": str(self.data_dir),
            "initialised": self.is_initialised(),
            "running": False,
        }
        if report["initialised"]:
            state = self.state()
            report.update(running=self.is_running(), port=state.port, database=state.database)
        return report

    # -- steps -----------------------------------------------------------------------------

    def foreign_files(self) -> list[str]:
        """Files in the data folder that a twin cluster does not make (none: it is ours to use)."""
        if not self.data_dir.is_dir():
            return []
        ours = {"pg", "cluster.json", "cluster.tmp", ".lock", "bench"}
        return sorted(p.name for p in self.data_dir.iterdir() if p.name not in ours)

    def _initialise(self) -> None:
        strangers = self.foreign_files()
        if strangers:
            shown = ", ".join(strangers[:5]) + (" …" if len(strangers) > 5 else "")
            raise SetupError(
                f"the data folder {self.data_dir} already holds other files ({shown}) and no "
                "twin cluster: refusing to take it over (choose a new or empty TWIN_DATA_DIR)"
            )
        if self.pgdata.exists() and any(self.pgdata.iterdir()):
            if (self.pgdata / "PG_VERSION").exists():
                raise SetupError(
                    f"{self.pgdata} holds a PostgreSQL cluster but {self.state_file} is missing: "
                    "it was not made by twin; refusing to touch it"
                )
            raise SetupError(
                f"{self.pgdata} is not empty and is not a PostgreSQL cluster; "
                "refusing to touch it (choose another TWIN_DATA_DIR)"
            )
        if not postgis_available(self.bin_dir):
            raise SetupError(
                f"PostGIS is not installed for {self.bin_dir.parent}: {postgis_hint(self.bin_dir)}"
            )
        self._check_folder_usable()
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        self._give_to_server_user(self.pgdata)
        password = secrets.token_urlsafe(24)
        with tempfile.TemporaryDirectory(prefix="twin-initdb-") as tmp:
            # initdb reads the password from a file the server user can read, then we drop it.
            pwfile = Path(tmp) / "pw"
            pwfile.write_text(password + "\n")
            os.chmod(pwfile, 0o600)
            self._give_to_server_user(Path(tmp))
            self._give_to_server_user(pwfile)
            out = self._initdb(pwfile)
        if out.returncode != 0:
            raise SetupError(f"initdb failed in {self.pgdata}: {_last_line(out.stderr)}")
        with (self.pgdata / "postgresql.conf").open("a") as conf:
            conf.write("\n# Written by twin for the embedded cluster.\n")
            for key, value in SERVER_CONFIG.items():
                conf.write(f"{key} = {value}\n")
        port = self.requested_port or free_port()
        state = ClusterState(port=port, user=SUPERUSER, password=password, database=DATABASE)
        self._save_state(state)

    def _initdb(self, pwfile: Path) -> subprocess.CompletedProcess[str]:
        return self._pg(
            [
                "initdb",
                "-D",
                str(self.pgdata),
                "-U",
                SUPERUSER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "--encoding=UTF8",
                "--locale=C.UTF-8",
            ],
            check=False,
        )

    def _start(self, state: ClusterState) -> ClusterState:
        port = self.requested_port or state.port
        if port_in_use(port):
            if self.requested_port:
                raise SetupError(
                    f"port {port} (TWIN_PG_PORT) is already in use on 127.0.0.1: "
                    "stop what listens there or choose another port"
                )
            port = free_port()  # our remembered port was taken meanwhile: move
        if port != state.port:
            state = ClusterState(**{**asdict(state), "port": port})
            self._save_state(state)
        # A server that died leaves its pid file; pg_ctl copes, but its log tells why.
        out = self._pg(
            [
                "pg_ctl",
                "start",
                "-D",
                str(self.pgdata),
                "-l",
                str(self.log_file),
                "-o",
                f"-p {port}",
                "-w",
                "-t",
                "60",
            ],
            check=False,
        )
        if out.returncode != 0:
            raise SetupError(
                f"the embedded PostgreSQL did not start ({_last_line(out.stderr or out.stdout)}); "
                f"see {self.log_file}: {self._log_tail()}"
            )
        return state

    def _ensure_database(self, state: ClusterState) -> None:
        admin = ClusterState(**{**asdict(state), "database": "postgres"}).url()
        deadline = time.monotonic() + 30
        while True:
            try:
                with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
                    exists = conn.execute(
                        "SELECT 1 FROM pg_database WHERE datname = %s", (state.database,)
                    ).fetchone()
                    if not exists:
                        # The name is our constant, never user input.
                        conn.execute(f'CREATE DATABASE "{state.database}"')
                break
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise SetupError(f"cannot connect to the embedded cluster: {exc}") from exc
                time.sleep(0.3)
        with psycopg.connect(state.url(), autocommit=True) as conn:
            conn.execute("CREATE EXTENSION IF NOT EXISTS postgis")

    # -- helpers ---------------------------------------------------------------------------

    def _server_account(self) -> pwd.struct_passwd | None:
        """The account the server runs as when we are root; None when we are not root."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(self.server_user)
        except KeyError as exc:
            raise SetupError(
                f"running as root, and PostgreSQL refuses root, but user '{self.server_user}' "
                "does not exist: create it (useradd -r postgres) or set TWIN_PG_SERVER_USER"
            ) from exc

    def _check_folder_usable(self) -> None:
        account = self._server_account()
        if account is None:
            if not os.access(self.data_dir, os.W_OK | os.X_OK):
                raise SetupError(f"cannot write to the data folder {self.data_dir}")
            return
        # The server user must reach the folder through every parent.
        probe = self._pg(["test", "-x", str(self.data_dir)], check=False)
        if probe.returncode != 0:
            raise SetupError(
                f"the server runs as '{account.pw_name}' (PostgreSQL refuses root) and cannot "
                f"reach {self.data_dir}: set TWIN_DATA_DIR to a folder it can reach, "
                "for example /var/lib/twin"
            )

    def _check_owner(self) -> None:
        """The cluster folder must belong to whoever runs the server; never chown it back."""
        account = self._server_account()
        expected = account.pw_uid if account is not None else os.geteuid()
        owner = self.pgdata.stat().st_uid
        if owner != expected:
            raise SetupError(
                f"{self.pgdata} belongs to user {_user_name(owner)}, but the server would run "
                f"as {_user_name(expected)}: refusing to change it "
                "(give it back to that user or choose another TWIN_DATA_DIR)"
            )

    def _give_to_server_user(self, path: Path) -> None:
        account = self._server_account()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _save_state(self, state: ClusterState) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(asdict(state), f, indent=2)
        os.replace(tmp, self.state_file)

    def _pg(
        self, args: list[str], *, input_text: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL program (or a probe) as the server user."""
        account = self._server_account()
        program = args[0]
        path = self.bin_dir / program if (self.bin_dir / program).exists() else program
        env = {**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
        kwargs: dict[str, object] = {}
        if account is not None:
            kwargs = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
            env["HOME"] = account.pw_dir
        try:
            out = subprocess.run(
                [str(path), *args[1:]],
                input=input_text,
                capture_output=True,
                text=True,
                env=env,
                cwd="/",
                check=False,
                **kwargs,  # type: ignore[arg-type]
            )
        except OSError as exc:
            raise SetupError(f"cannot run {program}: {exc}") from exc
        if check and out.returncode != 0:
            raise SetupError(f"{program} failed: {_last_line(out.stderr or out.stdout)}")
        return out

    def _log_tail(self) -> str:
        try:
            lines = self.log_file.read_text(errors="replace").strip().splitlines()
        except OSError:
            return "(no log)"
        return lines[-1] if lines else "(empty log)"

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        """One twin process at a time makes or starts the cluster."""
        lock_path = self.data_dir / ".lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise SetupError(f"cannot use the data folder {self.data_dir}: {exc}") from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)


def _user_name(uid: int) -> str:
    try:
        return f"'{pwd.getpwuid(uid).pw_name}'"
    except KeyError:
        return f"uid {uid}"


def _last_line(text: str) -> str:
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "no message"
