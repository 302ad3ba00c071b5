"""`make system` picks the PostGIS package of the PostgreSQL a machine has or would get,
and adds npm and Chromium (the 3D view's workers and its test) and a CJK font (the view's
Chinese names) when they are missing.

The Makefile's real recipe runs with fake `apt-cache`, `apt-get` and `id` on PATH and fake
/usr/lib/postgresql and /usr/share/postgresql folders, answering as Debian 12, Debian 13,
Ubuntu 24.04 and Ubuntu 22.04 do. The fake apt-get records what it was asked to install.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
MAKE = shutil.which("make")
pytestmark = pytest.mark.skipif(MAKE is None, reason="make is not installed")

# What `apt-cache depends postgresql` names, and the PostGIS packages apt knows, per release.
RELEASES = {
    "debian12": ("postgresql-15", ["postgresql-15-postgis-3", "postgresql-15-postgis-3-scripts"]),
    "debian13": ("postgresql-17", ["postgresql-17-postgis-3", "postgresql-17-postgis-3-scripts"]),
    "ubuntu2404": ("postgresql-16", ["postgresql-16-postgis-3"]),
    "ubuntu2204": ("postgresql-14", ["postgresql-14-postgis-3"]),
}
TOOLS = ("sh", "sed", "sort", "head", "tail", "grep")  # what the recipe runs besides apt


def _machine(
    tmp_path: Path,
    *,
    depends: str | None,
    postgis_packages: list[str],
    servers: tuple[int, ...] = (),
    postgis_for: tuple[int, ...] = (),
    gdal: bool = False,
    npm: bool = True,
    chromium: bool = True,
    cjk_font: bool | None = True,
    font_packages: tuple[str, ...] = ("fonts-noto-cjk", "fonts-wqy-microhei"),
    uid: int = 0,
) -> tuple[dict[str, str], Path]:
    """Fake bin, lib and share folders; returns the environment and apt-get's call log.
    ``cjk_font``: fontconfig knows a Chinese font (True), knows none (False), or there is
    no fontconfig at all (None)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        (bin_dir / tool).symlink_to(shutil.which(tool))
    log = tmp_path / "apt-get.log"
    depends_text = (
        f"postgresql\\n  Depends: {depends}\\n  Suggests: postgresql-doc\\n" if depends else ""
    )
    names = "\\n".join(
        ["postgresql-common", *postgis_packages, "postgresql-client", *font_packages]
    )
    scripts = {
        "apt-cache": f"""#!/bin/sh
case "$1 $2" in
  "depends postgresql") printf '{depends_text}'; [ -n '{depends_text}' ] || exit 100 ;;
  "pkgnames "*) printf '{names}\\n' | while read -r n; do
      case $n in "$2"*) echo "$n" ;; esac; done ;;
  *) exit 100 ;;
esac
""",
        "apt-get": f'#!/bin/sh\necho "$*" >> {log}\n',
        "id": f"#!/bin/sh\necho {uid}\n",
        "sudo": '#!/bin/sh\necho "sudo" >> ' + str(log) + '\nexec "$@"\n',
        "env": '#!/bin/sh\nwhile [ "${1#*=}" != "$1" ]; do shift; done\nexec "$@"\n',
    }
    for tool, present in (("ogr2ogr", gdal), ("npm", npm), ("chromium", chromium)):
        if present:
            scripts[tool] = "#!/bin/sh\n"
    if cjk_font is not None:  # what `fc-list :lang=zh family` prints
        scripts["fc-list"] = (
            "#!/bin/sh\necho 'WenQuanYi Micro Hei'\n" if cjk_font else "#!/bin/sh\n"
        )
    for name, text in scripts.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    lib, share = tmp_path / "lib", tmp_path / "share"
    for major in servers:
        (lib / str(major) / "bin").mkdir(parents=True)
        (lib / str(major) / "bin" / "postgres").touch()
    (lib / "14" / "bin").mkdir(parents=True, exist_ok=True)  # a client only: psql, no server
    (lib / "14" / "bin" / "psql").touch()
    for major in postgis_for:
        (share / str(major) / "extension").mkdir(parents=True)
        (share / str(major) / "extension" / "postgis.control").touch()
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), "LC_ALL": "C"}
    env["TEST_MAKE_ARGS"] = f"PG_LIB={lib}\nPG_SHARE={share}"
    return env, log


def _debian13(tmp_path: Path, **overrides: Any) -> tuple[dict[str, str], Path]:
    """A Debian 13 machine with PostgreSQL 17 and its PostGIS installed (the common case),
    ``overrides`` as ``_machine`` takes them."""
    return _machine(tmp_path, depends="postgresql-17", postgis_packages=RELEASES["debian13"][1],
                    servers=(17,), postgis_for=(17,), **overrides)  # fmt: skip


def _make_system(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [MAKE, "-s", "-C", str(ROOT), "system", *env["TEST_MAKE_ARGS"].splitlines(), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _installed(log: Path) -> list[str]:
    """The packages of each `apt-get install` call made."""
    calls = log.read_text().splitlines() if log.exists() else []
    return [c.split("-qq", 1)[1].split() for c in calls if c.startswith("install")]


@pytest.mark.parametrize(
    ("release", "package"),
    [
        ("debian12", "postgresql-15-postgis-3"),
        ("debian13", "postgresql-17-postgis-3"),
        ("ubuntu2404", "postgresql-16-postgis-3"),
        ("ubuntu2204", "postgresql-14-postgis-3"),
    ],
)
def test_a_fresh_machine_gets_postgis_for_the_postgresql_apt_installs(
    tmp_path: Path, release: str, package: str
):
    depends, packages = RELEASES[release]
    env, log = _machine(tmp_path, depends=depends, postgis_packages=packages)
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [[package, "gdal-bin"]]
    assert log.read_text().splitlines()[0] == "update -qq"
    major = package.split("-")[1]
    assert result.stdout.strip() == (
        f"installing {package} gdal-bin with apt-get, for PostgreSQL {major}"
        " (the version apt installs)"
    )


def test_an_installed_postgresql_gets_its_own_postgis_only(tmp_path: Path):
    # Debian 13 with PostgreSQL 15 (kept from an upgrade) and 17, GDAL already there: the
    # newest server is the one twin runs, whatever the metapackage would bring today.
    env, log = _machine(
        tmp_path,
        depends="postgresql-16",
        postgis_packages=["postgresql-15-postgis-3", "postgresql-17-postgis-3"],
        servers=(15, 17),
        postgis_for=(15,),
        gdal=True,
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["postgresql-17-postgis-3"]]
    assert "for PostgreSQL 17 (the newest installed)" in result.stdout


def test_postgis_present_and_gdal_missing_installs_gdal_only(tmp_path: Path):
    env, log = _debian13(
        tmp_path,
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["gdal-bin"]]


def test_everything_present_runs_no_apt(tmp_path: Path):
    env, log = _debian13(
        tmp_path,
        gdal=True,
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        "PostgreSQL 17 + PostGIS, GDAL, npm, Chromium, a CJK font: present"
    )
    assert not log.exists()


def test_without_the_metapackage_the_newest_postgis_apt_knows_is_taken(tmp_path: Path):
    env, log = _machine(
        tmp_path,
        depends=None,
        postgis_packages=["postgresql-13-postgis-3", "postgresql-16-postgis-3"],
        gdal=True,
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["postgresql-16-postgis-3"]]
    assert "(the newest apt has PostGIS for)" in result.stdout


def test_not_root_goes_through_sudo(tmp_path: Path):
    env, log = _machine(
        tmp_path, depends="postgresql-17", postgis_packages=RELEASES["debian13"][1], uid=1000
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    calls = log.read_text().splitlines()
    assert calls == [
        "sudo",
        "update -qq",
        "sudo",
        "install -y -qq postgresql-17-postgis-3 gdal-bin",
    ]


def test_dry_run_prints_the_commands_and_runs_none(tmp_path: Path):
    env, log = _machine(
        tmp_path, depends="postgresql-16", postgis_packages=RELEASES["ubuntu2404"][1], uid=1000
    )
    result = _make_system(env, "DRY_RUN=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "would run: sudo apt-get update -qq",
        "installing postgresql-16-postgis-3 gdal-bin with apt-get, for PostgreSQL 16"
        " (the version apt installs)",
        "would run: sudo env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes"
        " apt-get install -y -qq"
        " postgresql-16-postgis-3 gdal-bin",
    ]
    assert not log.exists()


def test_no_postgis_package_for_the_installed_postgresql_is_one_clear_error(tmp_path: Path):
    env, log = _machine(
        tmp_path, depends="postgresql-15", postgis_packages=RELEASES["debian12"][1], servers=(13,)
    )
    result = _make_system(env)
    assert result.returncode != 0
    assert "apt has no postgresql-13-postgis-3 for PostgreSQL 13" in result.stderr
    assert _installed(log) == []


def test_a_bare_machine_gets_npm_and_chromium_too(tmp_path: Path):
    depends, packages = RELEASES["debian12"]
    env, log = _machine(
        tmp_path, depends=depends, postgis_packages=packages, npm=False, chromium=False
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["postgresql-15-postgis-3", "gdal-bin", "npm", "chromium"]]
    assert result.stdout.strip() == (
        "installing postgresql-15-postgis-3 gdal-bin npm chromium with apt-get,"
        " for PostgreSQL 15 (the version apt installs)"
    )


def test_postgis_present_and_chromium_missing_installs_chromium_only(tmp_path: Path):
    # The 3D view's test needs a browser; PostgreSQL is not looked at again.
    env, log = _debian13(
        tmp_path,
        gdal=True,
        chromium=False,
    )
    result = _make_system(env, "DRY_RUN=1")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "would run: apt-get update -qq",
        "installing chromium with apt-get",
        "would run: env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install"
        " -y -qq chromium",
    ]
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["chromium"]]


def test_without_apt_a_missing_browser_is_one_clear_error(tmp_path: Path):
    env, _log = _debian13(
        tmp_path,
        gdal=True,
        npm=False,
    )
    (tmp_path / "bin" / "apt-get").unlink()
    result = _make_system(env)
    assert result.returncode != 0
    assert result.stderr.splitlines()[0] == "error: no apt-get: install npm (Node.js) and Chromium"


@pytest.mark.parametrize("fontconfig", [True, False], ids=["no-chinese-font", "no-fontconfig"])
def test_a_machine_without_a_cjk_font_gets_the_small_one(tmp_path: Path, fontconfig: bool):
    # Without one, Chromium here draws the 3D view's Chinese names as boxes.
    env, log = _debian13(
        tmp_path,
        gdal=True,
        cjk_font=False if fontconfig else None,
    )
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["fonts-wqy-microhei"]]
    assert result.stdout.strip() == "installing fonts-wqy-microhei with apt-get"


def test_without_wenquanyi_in_apt_noto_cjk_is_installed(tmp_path: Path):
    depends, packages = RELEASES["debian12"]
    env, log = _machine(
        tmp_path, depends=depends, postgis_packages=packages, cjk_font=False,
        font_packages=("fonts-noto-cjk", "fonts-wqy-microhei-extra"),
    )  # fmt: skip
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert _installed(log) == [["postgresql-15-postgis-3", "gdal-bin", "fonts-noto-cjk"]]


def test_without_apt_a_missing_font_is_a_warning_only(tmp_path: Path):
    env, log = _debian13(
        tmp_path,
        gdal=True,
        cjk_font=False,
    )
    (tmp_path / "bin" / "apt-get").unlink()
    result = _make_system(env)
    assert result.returncode == 0, result.stderr
    assert result.stderr.startswith("warning: no CJK font:"), result.stderr
    assert not log.exists()
