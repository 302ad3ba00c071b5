# Two commands set up a fresh machine (see README):
#   make demo   installs what is needed, loads the demo city, serves its API
#   make test   installs what is needed, runs lint and the test suite
# Both run `setup` first; it is quick when everything is already there.

VENV   := .venv
PY     := $(VENV)/bin/python
TWIN   := $(VENV)/bin/twin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
# Empty: the PostgreSQL major the machine has, or else the one apt installs (see below).
PG_MAJOR ?=
# Where Debian's packages put PostgreSQL; tests point these at fake folders.
PG_LIB   ?= /usr/lib/postgresql
PG_SHARE ?= /usr/share/postgresql
# DRY_RUN=1 prints the apt-get commands instead of running them.
DRY_RUN  ?=

.PHONY: setup system python node demo test lint bench bench-intake clean-venv

setup: system python node

# PostgreSQL and PostGIS (and GDAL's command line tools) from the distribution's packages,
# when missing. Debian 12 has PostgreSQL 15, Debian 13 17, Ubuntu 24.04 16, Ubuntu 22.04 14:
# PostGIS is installed for the newest PostgreSQL the machine has (the server, as twin uses
# it), or else for the one the `postgresql` package would bring, or else the newest apt
# offers PostGIS for. npm (for the 3D view's workers, `node` below) and Chromium (the 3D
# view's test opens the page in it, headless) come from the distribution too, and a CJK
# font when fontconfig knows none (a browser here draws the view's Chinese names as boxes
# without one): WenQuanYi Micro Hei (about 5 MB), or else Noto CJK (about 90 MB).
define SYSTEM_SH
run() { if [ -n "$$DRY_RUN" ]; then echo "would run: $$*"; else "$$@" >/dev/null; fi; }
fail() { echo "error: $$*; or set TWIN_DATABASE_URL to a PostGIS server" >&2; exit 1; }
have=
for server in "$$PG_LIB"/*/bin/postgres; do
  n=$${server#"$$PG_LIB"/}; n=$${n%%/*}
  case $$n in ''|*[!0-9]*) continue ;; esac
  [ -e "$$server" ] || continue
  if [ -z "$$have" ] || [ "$$n" -gt "$$have" ]; then have=$$n; fi
done
major=$${PG_MAJOR:-$$have}
postgis=no; gdal=no; npm=no; chromium=no; cjk=no
if [ -n "$$major" ] && [ -e "$$PG_SHARE/$$major/extension/postgis.control" ]; then postgis=yes; fi
if command -v ogr2ogr >/dev/null 2>&1; then gdal=yes; fi
if command -v npm >/dev/null 2>&1; then npm=yes; fi
if command -v chromium >/dev/null 2>&1; then chromium=yes; fi
if command -v fc-list >/dev/null 2>&1 && [ -n "$$(fc-list :lang=zh family 2>/dev/null)" ]; then cjk=yes; fi
if [ $$postgis = yes ] && [ $$gdal = yes ] && [ $$npm = yes ] && [ $$chromium = yes ] && [ $$cjk = yes ]; then
  echo "PostgreSQL $$major + PostGIS, GDAL, npm, Chromium, a CJK font: present"; exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
  [ $$postgis = yes ] && [ $$gdal = yes ] || fail "no apt-get: install PostgreSQL with PostGIS and GDAL"
  [ $$npm = yes ] && [ $$chromium = yes ] || { echo "error: no apt-get: install npm (Node.js) and Chromium" >&2; exit 1; }
  # Only the font is missing: the view still works, its Chinese names do not.
  echo "warning: no CJK font: a browser on this machine shows the 3D view's Chinese names as boxes; install one (WenQuanYi Micro Hei or Noto Sans CJK)" >&2
  exit 0
fi
run $$SUDO apt-get update -qq || exit 1
packages=; for_pg=
[ $$postgis = yes ] || {
  why="the newest installed"
  [ -n "$$PG_MAJOR" ] && why="PG_MAJOR"
  if [ -z "$$major" ]; then
    why="the version apt installs"
    major=$$(apt-cache depends postgresql 2>/dev/null | sed -n 's/^ *Depends: postgresql-\([0-9][0-9]*\)$$/\1/p' | head -n 1)
  fi
  if [ -z "$$major" ]; then
    why="the newest apt has PostGIS for"
    major=$$(apt-cache pkgnames postgresql- 2>/dev/null | sed -n 's/^postgresql-\([0-9][0-9]*\)-postgis-3$$/\1/p' | sort -n | tail -n 1)
  fi
  [ -n "$$major" ] || fail "apt knows no PostgreSQL with PostGIS (postgresql-N-postgis-3)"
  packages=postgresql-$$major-postgis-3
  apt-cache pkgnames "$$packages" 2>/dev/null | grep -qx "$$packages" || \
      fail "apt has no $$packages for PostgreSQL $$major: add the PostgreSQL project's apt repository"
  for_pg=", for PostgreSQL $$major ($$why)"
}
[ $$gdal = yes ] || packages="$$packages gdal-bin"
[ $$npm = yes ] || packages="$$packages npm"
[ $$chromium = yes ] || packages="$$packages chromium"
[ $$cjk = yes ] || {
  font=fonts-wqy-microhei
  apt-cache pkgnames "$$font" 2>/dev/null | grep -qx "$$font" || font=fonts-noto-cjk
  packages="$$packages $$font"
}
packages=$${packages# }
echo "installing $$packages with apt-get$$for_pg"
# DEBCONF_NOWARNINGS: a minimal image has no apt-utils, which debconf says on every install.
run $$SUDO env DEBIAN_FRONTEND=noninteractive DEBCONF_NOWARNINGS=yes apt-get install -y -qq $$packages
endef
export SYSTEM_SH

system:
	@SUDO='$(SUDO)' PG_MAJOR='$(PG_MAJOR)' PG_LIB='$(PG_LIB)' PG_SHARE='$(PG_SHARE)' \
	  DRY_RUN='$(DRY_RUN)' sh -c "$$SYSTEM_SH"

# The project in a virtual environment, reinstalled when pyproject.toml changes.
python: $(VENV)/.installed

# -qq: errors only. Warnings here are nothing a person acts on: a pip.conf's extra indexes
# warn once for each package they do not hold, and setuptools' editable install of our
# flat layout (several top-level packages) forwards a notice banner through pip.
$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(PY) -m pip install -qq --upgrade pip
	PIP_DISABLE_PIP_VERSION_CHECK=1 $(PY) -m pip install -qq -e '.[dev]'
	@touch $@

# The 3D view's web workers (loaders.gl, package.json), reinstalled when the lock changes.
node: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --ignore-scripts --no-audit --no-fund --loglevel=error
	@touch $@

demo: setup
	$(TWIN) up

lint: python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports

test: setup lint
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/demo_load.py --size $(or $(SIZE),default)

# Intake over HTTP with wrk as the load (a C client, so the figure measures the server);
# wrk is installed when missing (bench/intake.py falls back to Python threads without it).
bench-intake: setup
	@command -v wrk >/dev/null 2>&1 || $(SUDO) apt-get install -y -qq wrk >/dev/null
	$(PY) bench/intake.py --size $(or $(SIZE),large)
