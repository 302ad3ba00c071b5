# Two commands set up a fresh machine (see README):
#   make demo   installs what is needed, loads the demo city, serves its API
#   make test   installs what is needed, runs lint and the test suite
# Both run `setup` first; it is quick when everything is already there.

VENV   := .venv
PY     := $(VENV)/bin/python
TWIN   := $(VENV)/bin/twin
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
PG_MAJOR ?= 15

.PHONY: setup system python demo test lint bench clean-venv

setup: system python

# PostgreSQL and PostGIS (and GDAL's command line tools) from Debian's packages, when missing.
system:
	@if ls /usr/share/postgresql/*/extension/postgis.control >/dev/null 2>&1 && command -v ogr2ogr >/dev/null; then \
	  echo "PostgreSQL + PostGIS, GDAL: present"; \
	elif command -v apt-get >/dev/null 2>&1; then \
	  echo "installing postgresql-$(PG_MAJOR)-postgis-3 and gdal-bin with apt-get"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq postgresql-$(PG_MAJOR)-postgis-3 gdal-bin >/dev/null; \
	else \
	  echo "error: install PostgreSQL with PostGIS (or set TWIN_DATABASE_URL)"; exit 1; \
	fi

# The project in a virtual environment, reinstalled when pyproject.toml changes.
python: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@[ -x $(PY) ] || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

demo: setup
	$(TWIN) up

lint: python
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(VENV)/bin/pytest

bench: setup
	$(PY) bench/demo_load.py --size $(or $(SIZE),default)
