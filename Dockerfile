# The one map (一张图): container image of the API (`twin serve`).
#
#   docker build -t one-map-twin .
#   docker run --rm -p 8000:8000 \
#       -e TWIN_DATABASE_URL=postgresql://twin:twin@db-host:5432/twin one-map-twin
#
# The image has no PostgreSQL of its own: set TWIN_DATABASE_URL to a PostGIS
# server (docker-compose.yml starts one). Three stages:
#   assets  node:20-slim builds node_modules (the @loaders.gl/mvt worker of the 3D view);
#   build   installs the project and its dependencies into a virtualenv;
#   runtime copies the virtualenv and node_modules into a clean python image.
# The shapely/pyproj/rasterio/pyogrio/psycopg[binary] manylinux wheels bundle
# their C libraries (GEOS, PROJ, GDAL, libpq), so no apt packages are needed.

# --- assets: node_modules, needed only at build time -------------------------
FROM node:20-slim AS assets
WORKDIR /build
# pyproject.toml anchors the COPY so that it works while package*.json do not exist yet.
COPY pyproject.toml package*.json ./
RUN if [ -f package-lock.json ]; then \
        npm ci --omit=dev --no-audit --no-fund; \
    elif [ -f package.json ]; then \
        npm install --omit=dev --no-audit --no-fund; \
    fi \
 && mkdir -p node_modules

# --- build: the project and its dependencies in /opt/venv --------------------
FROM python:3.11-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY . .
RUN pip install --no-cache-dir .

# --- runtime -----------------------------------------------------------------
FROM python:3.11-slim-bookworm AS runtime

LABEL org.opencontainers.image.title="one-map-twin" \
      org.opencontainers.image.description="The one map (一张图): a spatial digital twin for running a city, on PostGIS." \
      org.opencontainers.image.licenses="Apache-2.0"

# A fixed numeric uid/gid, so that orchestrators can check runAsNonRoot.
RUN groupadd --system --gid 10001 twin \
 && useradd --system --uid 10001 --gid twin --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin twin \
 && mkdir -p /app \
 && chown twin:twin /app

COPY --from=build /opt/venv /opt/venv
COPY --from=assets /build/node_modules /app/node_modules

ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/app \
    TWIN_HOST=0.0.0.0 \
    TWIN_PORT=8000

WORKDIR /app
USER 10001:10001

EXPOSE 8000

# No curl in the slim image: ask /health with the standard library. urlopen raises
# (exit status 1) on a refused connection, a timeout or any non-2xx answer.
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('TWIN_PORT', '8000') + '/health', timeout=4)" || exit 1

CMD ["twin", "serve"]
