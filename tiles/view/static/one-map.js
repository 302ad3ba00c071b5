// The 3D view's page: deck.gl (pydeck's bundle) draws the deck that tiles/view/deck.py
// wrote; this script adds what a JSON deck cannot say: vertices lifted to their height,
// the layer toggles, tooltips, the locate answer on a click, and incidents kept live.
/* global createDeck */
(function () {
  "use strict";

  const deckJson = JSON.parse(document.getElementById("deck-json").textContent);
  const config = JSON.parse(document.getElementById("view-config").textContent);
  const titles = Object.fromEntries(config.layers.map((l) => [l.id, l.title]));
  const statusLine = document.getElementById("status");

  function say(text) {
    statusLine.textContent = text;
  }

  // loaders.gl starts a worker from a blob that imports the worker's URL; a blob has no
  // address to resolve a path against, so the workers' URLs are made absolute.
  function absoluteWorkerUrls(node) {
    if (Array.isArray(node)) {
      node.forEach(absoluteWorkerUrls);
    } else if (node && typeof node === "object") {
      for (const [key, value] of Object.entries(node)) {
        if (key === "workerUrl" && typeof value === "string") {
          node[key] = new URL(value, window.location.href).href;
        } else {
          absoluteWorkerUrls(value);
        }
      }
    }
  }

  // The fetch every deck.gl layer has by default (Layer.defaultProps.fetch).
  function defaultFetch(layer) {
    for (let kind = layer.constructor; kind; kind = Object.getPrototypeOf(kind)) {
      const prop = Object.prototype.hasOwnProperty.call(kind, "defaultProps") &&
        kind.defaultProps.fetch;
      if (prop) {
        return typeof prop === "function" ? prop : prop.value;
      }
    }
    throw new Error("deck.gl has no default fetch");
  }

  function lift(coordinates, z) {
    if (typeof coordinates[0] === "number") {
      return [coordinates[0], coordinates[1], z];
    }
    return coordinates.map((inner) => lift(inner, z));
  }

  // The height of a feature: offset + scale x its property, or `missing` without one.
  function height(value, { scale, offset, missing }) {
    const number = value === null || value === undefined || value === "" ? NaN : Number(value);
    return Number.isFinite(number) ? offset + scale * number : missing;
  }

  // Binary tiles (loaders.gl's flat arrays): each vertex gets a third coordinate, from
  // the property's per-vertex array when it is numeric in every feature, else from the
  // feature's properties.
  function liftBinary(geometry, rule) {
    if (!geometry || !geometry.positions || geometry.positions.size !== 2) {
      return;
    }
    const flat = geometry.positions.value;
    const count = flat.length / 2;
    const lifted = new Float64Array(count * 3);
    const numeric = geometry.numericProps && geometry.numericProps[rule.property];
    const ids = geometry.featureIds && geometry.featureIds.value;
    for (let i = 0; i < count; i++) {
      const value = numeric
        ? numeric.value[i]
        : rule.property && ids && (geometry.properties[ids[i]] || {})[rule.property];
      lifted[3 * i] = flat[2 * i];
      lifted[3 * i + 1] = flat[2 * i + 1];
      lifted[3 * i + 2] = height(value, rule);
    }
    geometry.positions = { value: lifted, size: 3 };
  }

  // `{"@@function": "lifted", "property": p, "scale": s, "offset": o, "missing": m}` in
  // the deck: a tile fetcher that puts each feature's vertices at o + s x its property p
  // metres, or m when it has none (MVT is flat).
  function lifted(rule) {
    return async function (url, options) {
      const tile = await defaultFetch(options.layer)(url, options);
      if (Array.isArray(tile)) {
        for (const feature of tile) {
          if (feature.geometry) {
            const z = height(feature.properties && feature.properties[rule.property], rule);
            feature.geometry.coordinates = lift(feature.geometry.coordinates, z);
          }
        }
      } else if (tile && typeof tile === "object") {
        ["points", "lines", "polygons"].forEach((kind) => liftBinary(tile[kind], rule));
      }
      return tile;
    };
  }

  const escapes = { "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" };
  function escapeHtml(value) {
    const text = typeof value === "object" ? JSON.stringify(value) : String(value);
    return text.replace(/[&<>"']/g, (c) => escapes[c]);
  }

  // A feature's properties as a table; every value escaped: a name is text, never HTML.
  function tooltip(info) {
    const feature = info.object;
    if (!feature || !feature.properties) {
      return null;
    }
    const rows = Object.entries(feature.properties)
      .filter(([key, value]) => value !== null && value !== undefined && key !== "layerName")
      .map(([key, value]) => `<tr><th>${escapeHtml(key)}</th><td>${escapeHtml(value)}</td></tr>`)
      .join("");
    const title = titles[info.layer && info.layer.id] || (info.layer && info.layer.id) || "";
    return { html: `<b>${escapeHtml(title)}</b><table>${rows}</table>` };
  }

  // --- the locate answer of a clicked point (GET /locate) --------------------------
  const locatePanel = document.getElementById("locate");
  const locateBody = document.getElementById("locate-body");
  document.getElementById("locate-close").addEventListener("click", () => {
    locatePanel.hidden = true;
  });

  function element(tag, text) {
    const made = document.createElement(tag);
    if (text !== undefined) {
      made.textContent = text;
    }
    return made;
  }

  function facts(object) {
    const list = element("dl");
    for (const [key, value] of Object.entries(object || {})) {
      if (value === null || value === undefined || typeof value === "object") {
        continue;
      }
      list.append(element("dt", key), element("dd", String(value)));
    }
    return list;
  }

  // Each part of the answer under its own heading: lists one entry each.
  function showLocate(answer) {
    locateBody.replaceChildren();
    const where = `${Number(answer.lon).toFixed(6)}, ${Number(answer.lat).toFixed(6)}`;
    locateBody.append(element("h2", `Here 此处 ${where}`));
    if (answer.message) {
      locateBody.append(element("p", answer.message));
    }
    for (const [part, value] of Object.entries(answer)) {
      if (["lon", "lat", "inside", "message"].includes(part) || value === null) {
        continue;
      }
      const items = Array.isArray(value) ? value : [value];
      if (items.length === 0) {
        continue;
      }
      locateBody.append(element("h3", part));
      for (const item of items) {
        if (item && typeof item === "object") {
          locateBody.append(facts(item.properties ? { ...item, ...item.properties } : item));
          for (const [key, inner] of Object.entries(item)) {
            if (Array.isArray(inner) && inner.length && typeof inner[0] === "object") {
              locateBody.append(element("h3", `${part} · ${key}`));
              inner.forEach((one) => locateBody.append(facts(one)));
            }
          }
        } else {
          locateBody.append(element("p", String(item)));
        }
      }
    }
    locatePanel.hidden = false;
  }

  async function locate(info) {
    if (!info.coordinate) {
      return;
    }
    const [lon, lat] = info.coordinate;
    const query = new URLSearchParams({ lon: lon.toFixed(7), lat: lat.toFixed(7) });
    try {
      const response = await fetch(`/locate?${query}`);
      const answer = await response.json();
      if (!response.ok) {
        say(`locate: ${answer.detail || answer.message || response.status}`);
        return;
      }
      showLocate(answer);
    } catch (error) {
      say(`locate: ${error.message}`);
    }
  }

  // --- the deck -----------------------------------------------------------------------
  absoluteWorkerUrls(deckJson);
  const container = document.getElementById("map");
  const deckgl = createDeck({
    container,
    jsonInput: deckJson,
    tooltip: false,
    configuration: { functions: { lifted } },
  });
  deckgl.setProps({ getTooltip: tooltip });
  window.oneMap = { deck: deckgl, locate, showLocate };

  // A click (not the end of a drag) asks what is at that point: the feature's own point
  // when one is under the pointer, else the ground's. The browser's click, not deck.gl's
  // tap: a slow frame between press and release must not lose it.
  let pressedAt = null;
  container.addEventListener("pointerdown", (event) => {
    pressedAt = [event.clientX, event.clientY];
  });
  container.addEventListener("click", (event) => {
    if (!pressedAt || Math.hypot(event.clientX - pressedAt[0], event.clientY - pressedAt[1]) > 4) {
      return;
    }
    const box = container.getBoundingClientRect();
    const x = event.clientX - box.left;
    const y = event.clientY - box.top;
    const picked = deckgl.pickObject({ x, y, radius: 2, unproject3D: true });
    const viewport = deckgl.getViewports()[0];
    const coordinate = (picked && picked.coordinate) || (viewport && viewport.unproject([x, y]));
    locate({ coordinate });
  });

  function replaceLayer(id, changes) {
    const layers = deckgl.props.layers.map((l) => (l && l.id === id ? l.clone(changes) : l));
    deckgl.setProps({ layers });
  }

  // --- the layer toggles ------------------------------------------------------------
  const toggles = document.getElementById("toggles");
  for (const { id, title } of config.layers) {
    const layer = deckgl.props.layers.find((l) => l && l.id === id);
    const box = element("input");
    box.type = "checkbox";
    box.checked = !layer || layer.props.visible !== false;
    box.dataset.layer = id;
    box.addEventListener("change", () => replaceLayer(id, { visible: box.checked }));
    const label = element("label");
    label.append(box, document.createTextNode(` ${title}`));
    toggles.append(label);
  }

  const legend = document.getElementById("legend");
  for (const [heading, colours] of Object.entries(config.legend)) {
    legend.append(element("h2", heading));
    for (const [name, [r, g, b]] of Object.entries(colours)) {
      const swatch = element("span");
      swatch.className = "swatch";
      swatch.style.background = `rgb(${r}, ${g}, ${b})`;
      const row = element("div");
      row.append(swatch, document.createTextNode(name));
      legend.append(row);
    }
  }

  // --- incidents, live: the change log says when to reload their tiles ---------------
  let version = config.version;
  async function poll() {
    try {
      const query = new URLSearchParams({ after: version, layer: "incidents", limit: 1 });
      const response = await fetch(`/changes?${query}`, { cache: "no-store" });
      if (response.ok) {
        const answer = await response.json();
        if (answer.changes.length) {
          version = answer.latest;
          replaceLayer("incidents", { updateTriggers: { getTileData: version } });
          say(`incidents updated ${new Date().toLocaleTimeString()}`);
        }
      }
    } catch (error) {
      say(`change log: ${error.message}`);
    }
    window.setTimeout(poll, config.pollSeconds * 1000);
  }
  window.setTimeout(poll, config.pollSeconds * 1000);
})();
