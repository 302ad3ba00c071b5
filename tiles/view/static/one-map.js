// The 3D view's page: deck.gl (pydeck's bundle) draws the deck that tiles/view/deck.py
// wrote; this script adds what a JSON deck cannot say: vertices lifted to their height,
// the layer toggles, tooltips, the locate answer on a click, incidents kept live, and the
// staff's isolation tool (a burst's valves to close, drawn over the map).
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

  // What each feature of an isolation's map is, in words.
  const ROLE_WORDS = {
    isolated: "isolated pipe 停水管段",
    close: "valve to close 需关阀门",
    closed: "valve closed already 已关阀门",
    building_isolated: "building isolated 停水楼宇",
    building_cut_off: "building cut off 断供楼宇",
  };

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
    let title = titles[info.layer && info.layer.id] || (info.layer && info.layer.id) || "";
    if (info.layer && info.layer.id === "isolation") {
      const role = feature.properties.role;
      title = `${title}: ${ROLE_WORDS[role] || role}${feature.properties.sensitive ? " · sensitive 敏感" : ""}`;
    }
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

  // --- the isolation tool (staff): a burst's valves to close, drawn over the map -------
  // POST /network/{network}/isolate at a clicked point, or GET /network/bursts/{id} for
  // /view?burst=<id>. The key lives in this tab's sessionStorage and in a header: never
  // in an address, a log or the console.
  const iso = config.isolation;
  titles.isolation = iso.title;
  const isoTool = document.getElementById("isolation-tool");
  const isoNetwork = document.getElementById("iso-network");
  const isoKey = document.getElementById("iso-key");
  const isoOn = document.getElementById("iso-on");
  const isoSummary = document.getElementById("iso-summary");
  const KEY_STORE = "oneMap.apiKey";
  const LISTED = 20; // valves named in the summary; the rest counted
  let asked = 0; // the latest request's number: an older answer, or one after a clear, is dropped
  let pendingBurst = null; // ?burst= waiting for a key

  for (const name of iso.networks) {
    const option = element("option", name);
    option.value = name;
    isoNetwork.append(option);
  }

  function keyStore() {
    try {
      return window.sessionStorage; // a sandboxed frame may refuse it
    } catch {
      return null;
    }
  }
  isoKey.value = (keyStore() && keyStore().getItem(KEY_STORE)) || "";
  isoKey.addEventListener("input", () => {
    const store = keyStore();
    const key = isoKey.value.trim();
    if (store) {
      key ? store.setItem(KEY_STORE, key) : store.removeItem(KEY_STORE);
    }
  });
  isoKey.addEventListener("change", () => {
    if (pendingBurst && isoKey.value.trim()) {
      showBurst(pendingBurst);
    }
  });

  function note(text, kind) {
    const line = element("p", text);
    if (kind) {
      line.className = kind;
    }
    return line;
  }

  function showError(what, text) {
    isoSummary.replaceChildren(note(`${what}: ${text}`, "error"));
    isoTool.open = true;
  }

  // A staff route with the key: {answer} on success, {error, status} otherwise (the
  // problem's detail, e.g. 401 "this route needs a valid X-API-Key header").
  async function staffFetch(path, options = {}) {
    const key = isoKey.value.trim();
    if (!key) {
      return { error: "paste a staff API key (X-API-Key) first", status: 0 };
    }
    let response;
    try {
      response = await fetch(path, {
        ...options,
        headers: { ...(options.headers || {}), "X-API-Key": key },
        cache: "no-store",
      });
    } catch (error) {
      return { error: error.message, status: 0 };
    }
    let answer = null;
    try {
      answer = await response.json();
    } catch {
      answer = null;
    }
    if (!response.ok) {
      const detail = (answer && (answer.detail || answer.title)) || response.statusText;
      const text = typeof detail === "string" ? detail : JSON.stringify(detail);
      return { error: `${response.status} ${text}`, status: response.status };
    }
    if (!answer) {
      return { error: `${response.status}: the answer is not JSON`, status: response.status };
    }
    return { answer, status: response.status };
  }

  // The map's features lifted above the ground, drawn in the isolation layer.
  function draw(map) {
    const features = ((map && map.features) || [])
      .filter((f) => f && f.geometry)
      .map((f) => ({ ...f, geometry: { ...f.geometry, coordinates: lift(f.geometry.coordinates, iso.z) } }));
    replaceLayer("isolation", { data: { type: "FeatureCollection", features } });
    return features;
  }

  function clearIsolation() {
    asked += 1;
    pendingBurst = null;
    replaceLayer("isolation", { data: [] });
    isoSummary.replaceChildren();
  }

  function summarise(answer, heading) {
    const list = element("dl");
    const count = (value) => (Array.isArray(value) ? value.length : value);
    const rows = [
      ["Valves to close 需关阀门", count(answer.valves)],
      ["Closed already 已关", count(answer.valves_closed_already)],
      ["Isolated pipes 停水管段", answer.isolated_pipe_count ?? count(answer.isolated_pipes)],
      ["Length 长度", `${Math.round(answer.total_length_m || 0).toLocaleString()} m`],
      ["Cut off pipes 断供管段", answer.cut_off_pipe_count || undefined],
      ["Buildings 影响楼宇", answer.building_count ?? count(answer.buildings)],
      ["Sensitive sites 敏感单位", answer.sensitive_sites],
      // null: no affected building's households are known (not none affected).
      ["Households 户数", answer.households ?? "not known 未知"],
    ];
    for (const [name, value] of rows) {
      if (value !== undefined && value !== null) {
        list.append(element("dt", name), element("dd", String(value)));
      }
    }
    isoSummary.replaceChildren(element("h2", heading), list);
    const valves = answer.valves || [];
    if (valves.length) {
      const named = element("ol");
      valves.slice(0, LISTED).forEach((v) => named.append(element("li", `${v.source_id} (id ${v.id})`)));
      isoSummary.append(element("h2", "Close 关闭"), named);
      if (valves.length > LISTED) {
        isoSummary.append(note(`… and ${valves.length - LISTED} more`));
      }
    }
    const warnings = [
      ...(answer.warnings || []),
      ...(answer.valves_skipped || []).map((v) => `valve ${v.source_id} passed: ${v.reason}`),
    ];
    if (warnings.length) {
      const said = element("ul");
      warnings.forEach((w) => said.append(note(w, "warning")));
      isoSummary.append(said);
    }
    isoTool.open = true;
  }

  // Isolate a burst at (lon, lat) on the chosen network; what the page did, in short.
  async function isolateAt(lon, lat) {
    const ticket = ++asked;
    const network = isoNetwork.value;
    isoSummary.replaceChildren(note(`isolating on ${network}…`));
    const got = await staffFetch(`/network/${encodeURIComponent(network)}/isolate`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ point: { lon: Number(lon.toFixed(7)), lat: Number(lat.toFixed(7)) } }),
    });
    if (ticket !== asked) {
      return { dropped: true };
    }
    if (got.error) {
      showError("isolate", got.error);
      return { status: got.status, error: got.error };
    }
    const features = draw(got.answer.map);
    const burst = got.answer.burst || {};
    const pipe = burst.pipe || {};
    const away = burst.distance_m === undefined ? "" : `, ${burst.distance_m} m away`;
    summarise(got.answer, `Burst on ${network} pipe ${pipe.source_id} (id ${pipe.id})${away}`);
    return { status: got.status, drawn: features.length };
  }

  // Centre the camera on the features (a burst asked for by address may be anywhere).
  function centreOn(features) {
    const points = [];
    const collect = (c) => (typeof c[0] === "number" ? points.push(c) : c.forEach(collect));
    features.forEach((f) => collect(f.geometry.coordinates));
    const viewport = deckgl.getViewports()[0];
    if (!points.length || !viewport) {
      return;
    }
    const lons = points.map((p) => p[0]);
    const lats = points.map((p) => p[1]);
    const { zoom, pitch, bearing } = viewport;
    deckgl.setProps({
      initialViewState: {
        longitude: (Math.min(...lons) + Math.max(...lons)) / 2,
        latitude: (Math.min(...lats) + Math.max(...lats)) / 2,
        zoom, pitch, bearing, maxPitch: 85,
      },
    });
  }

  // An open burst's isolation (GET /network/bursts/{id}), as opened.
  async function showBurst(id) {
    const ticket = ++asked;
    pendingBurst = null;
    isoSummary.replaceChildren(note(`burst ${id}…`));
    const got = await staffFetch(`/network/bursts/${encodeURIComponent(id)}`);
    if (ticket !== asked) {
      return { dropped: true };
    }
    if (got.error) {
      if (got.status === 0 && !isoKey.value.trim()) {
        pendingBurst = id; // the key, when pasted, shows it
      }
      showError(`burst ${id}`, got.error);
      return { status: got.status, error: got.error };
    }
    const burst = got.answer;
    const isolation = burst.isolation || {};
    if (!isolation.map) {
      showError(`burst ${id}`, "its answer holds no isolation map to draw");
      return { status: got.status, error: "no map" };
    }
    if (iso.networks.includes(burst.network)) {
      isoNetwork.value = burst.network;
    }
    const features = draw(isolation.map);
    summarise(isolation, `Burst ${burst.id} 爆管 (${burst.status}), ${burst.network}`);
    centreOn(features);
    return { status: got.status, drawn: features.length };
  }

  isoOn.addEventListener("change", () => {
    if (isoOn.checked && !isoSummary.childElementCount) {
      isoSummary.replaceChildren(note("click the map: the nearest pipe's burst is isolated"));
    }
  });
  document.getElementById("iso-clear").addEventListener("click", clearIsolation);
  deckgl.setProps({
    getCursor: ({ isDragging }) => (isDragging ? "grabbing" : isoOn.checked ? "crosshair" : "grab"),
  });

  const burstAsked = new URLSearchParams(window.location.search).get("burst");
  if (burstAsked !== null) {
    if (!/^[1-9][0-9]{0,17}$/.test(burstAsked)) {
      showError("burst", `?burst= is a burst's number, not ${JSON.stringify(burstAsked.slice(0, 40))}`);
    } else if (!isoKey.value.trim()) {
      pendingBurst = burstAsked;
      isoSummary.replaceChildren(note(`paste a staff API key to show burst ${burstAsked}`));
      isoTool.open = true;
    } else {
      showBurst(burstAsked);
    }
  }

  window.oneMap = { deck: deckgl, locate, showLocate, isolateAt, showBurst, clearIsolation };
  // Hooks for a person at the console or a test: isolate at a point, show a burst.
  window.twinIsolate = isolateAt;
  window.twinBurst = showBurst;

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
    if (isoOn.checked) {
      if (coordinate) {
        isolateAt(coordinate[0], coordinate[1]);
      }
      return;
    }
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
          // A new incident may lie beyond the extent the page was made with: the
          // tileset's bounding box says where its tiles are now.
          const changes = { updateTriggers: { getTileData: version } };
          const tileset = await fetch("/collections/incidents/tiles/WebMercatorQuad");
          const box = tileset.ok ? (await tileset.json()).boundingBox : null;
          if (box) changes.extent = [...box.lowerLeft, ...box.upperRight];
          replaceLayer("incidents", changes);
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
