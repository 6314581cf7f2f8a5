// Lesion Search web UI: one page, no framework, no external resources.
// State lives in `state` and in the URL (so a search can be shared and Back works).
"use strict";

const PRESETS = {
  soft: [400, 40], lung: [1500, -600], liver: [150, 90], bone: [2500, 480],
  brain: [80, 40], mediastinum: [350, 50], abdomen: [400, 60],
};
const TYPES = ["bone", "abdomen", "mediastinum", "liver", "lung", "kidney", "soft_tissue", "pelvis", "unknown"];
const PAGE = 24;

const $ = (id) => document.getElementById(id);
const state = {
  slice: null,        // {pixels: Int16Array, width, height, unit, ownWindow: [low, high] | null}
  source: null,       // {upload} or {lesion: id}
  box: null,          // [x1, y1, x2, y2] in slice pixels
  file: null,         // the File last opened (sent again when the lesion is added)
  window: { name: "soft", width: 400, level: 40 },
  positives: [], negatives: [],
  hits: [], offset: 0, total: 0, lastBody: null, loading: false,
};

// ---------- messages ----------
function showError(message) {
  $("error-text").textContent = message;
  $("error").hidden = false;
}
function clearError() { $("error").hidden = true; }
$("error-close").addEventListener("click", clearError);
function busy(message) {
  $("busy").textContent = message || "";
  $("busy").hidden = !message;
  $("results").setAttribute("aria-busy", message ? "true" : "false");
}

// ---------- API ----------
// The access key, when the server asks for one: kept for this tab only (sessionStorage),
// sent as a Bearer header, never put in a URL.
const KEY_SLOT = "lesion-search-key";
function accessKey() { return sessionStorage.getItem(KEY_SLOT) || ""; }
let keyPrompt = null;
function askForKey(message) {
  // Requests that fail together share one prompt.
  if (keyPrompt) return keyPrompt;
  keyPrompt = new Promise((resolve) => {
    const dialog = $("key-dialog");
    $("key-message").textContent = message;
    $("key-input").value = "";
    const done = (key) => {
      dialog.close();
      keyPrompt = null;
      if (key) sessionStorage.setItem(KEY_SLOT, key);
      resolve(key);
    };
    $("key-form").onsubmit = (e) => { e.preventDefault(); done($("key-input").value.trim()); };
    $("key-cancel").onclick = () => done("");
    dialog.showModal();
    $("key-input").focus();
  });
  return keyPrompt;
}

async function api(path, options = {}, retried = false) {
  let response;
  const headers = new Headers(options.headers || {});
  if (accessKey()) headers.set("Authorization", `Bearer ${accessKey()}`);
  try {
    response = await fetch(path, { ...options, headers });
  } catch (e) {
    throw new Error(`Cannot reach the server (${e.message}). Is lesion-web running?`);
  }
  if (response.status === 401 && !retried) {
    sessionStorage.removeItem(KEY_SLOT);
    let message = "This archive needs an access key.";
    try {
      // Writes need the admin key even when the read key is held.
      if (/admin key/.test((await response.clone().json()).error.message)) message = "This needs the admin key.";
    } catch (_) { /* not JSON */ }
    const key = await askForKey(message);
    if (key) return api(path, options, true);
  }
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try {
      const body = await response.json();
      if (body.error) message = body.error.message + (body.error.field ? ` [${body.error.field}]` : "");
    } catch (_) { /* not JSON */ }
    throw new Error(message);
  }
  return response;
}
const json = (body) => ({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });

async function loadPixels(url) {
  const response = await api(url);
  const width = Number(response.headers.get("X-Image-Width"));
  const height = Number(response.headers.get("X-Image-Height"));
  const unit = response.headers.get("X-Pixel-Unit");
  const pixels = new Int16Array(await response.arrayBuffer());
  return { pixels, width, height, unit };
}

// ---------- windowing and drawing ----------
function windowBounds(w) { return [w.level - w.width / 2, w.level + w.width / 2]; }
function windowParam() {
  if (state.window.name && state.window.name !== "custom") return state.window.name;
  const [low, high] = windowBounds(state.window);
  return `${Math.round(low)},${Math.round(high)}`;
}
function setWindow(name, target = state) {
  let w;
  if (name === "dicom") {
    const own = target.slice && target.slice.ownWindow;
    w = own ? { width: own[1] - own[0], level: (own[0] + own[1]) / 2 } : { width: 400, level: 40 };
  } else {
    const [width, level] = PRESETS[name] || PRESETS.soft;
    w = { width, level };
  }
  target.window = { name, ...w };
}

function render(canvas, slice, win, box, colour = "#ffd600") {
  const ctx = canvas.getContext("2d");
  if (!slice) { ctx.clearRect(0, 0, canvas.width, canvas.height); return; }
  const { width, height, pixels } = slice;
  const image = new ImageData(width, height);
  const [low, high] = slice.unit === "display" ? [0, 255] : windowBounds(win);
  const scale = 255 / Math.max(1e-6, high - low);
  for (let i = 0; i < pixels.length; i++) {
    const v = Math.max(0, Math.min(255, (pixels[i] - low) * scale));
    const o = i * 4;
    image.data[o] = image.data[o + 1] = image.data[o + 2] = v;
    image.data[o + 3] = 255;
  }
  const off = document.createElement("canvas");
  off.width = width; off.height = height;
  off.getContext("2d").putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = true;
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  ctx.drawImage(off, 0, 0, canvas.width, canvas.height);
  if (box) {
    const sx = canvas.width / width, sy = canvas.height / height;
    ctx.strokeStyle = colour;
    ctx.lineWidth = 2;
    ctx.strokeRect(box[0] * sx, box[1] * sy, (box[2] - box[0]) * sx, (box[3] - box[1]) * sy);
  }
}

function drawViewer() {
  render($("viewer"), state.slice, state.window, state.box);
  $("viewer-empty").hidden = !!state.slice;
  $("wl-readout").textContent = `W ${Math.round(state.window.width)} L ${Math.round(state.window.level)}`;
  $("box-readout").textContent = state.box ? `Box: ${state.box.map(Math.round).join(",")}` : "Box: none";
  $("add-open").hidden = !(writesOn && state.file && state.source && state.source.upload && state.box);
  document.querySelectorAll("#query .windows button").forEach((b) =>
    b.setAttribute("aria-pressed", String(b.dataset.window === state.window.name)));
}

// Drag draws the box; shift-drag or right-drag changes the window (horizontal: width, vertical: level).
function attachWindowDrag(canvas, getWindow, onChange) {
  let drag = null;
  canvas.addEventListener("contextmenu", (e) => e.preventDefault());
  canvas.addEventListener("pointerdown", (e) => {
    if (!(e.shiftKey || e.button === 2)) return;
    drag = { x: e.clientX, y: e.clientY, start: { ...getWindow() } };
    canvas.setPointerCapture(e.pointerId);
    e.stopImmediatePropagation();
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    const w = getWindow();
    w.width = Math.max(1, drag.start.width + (e.clientX - drag.x) * 4);
    w.level = drag.start.level + (e.clientY - drag.y) * 2;
    w.name = "custom";
    onChange();
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
  return () => drag !== null;
}

function viewerPoint(e) {
  const canvas = $("viewer");
  const rect = canvas.getBoundingClientRect();
  return [
    ((e.clientX - rect.left) / rect.width) * state.slice.width,
    ((e.clientY - rect.top) / rect.height) * state.slice.height,
  ];
}

(function setUpViewer() {
  const canvas = $("viewer");
  const windowing = attachWindowDrag(canvas, () => state.window, drawViewer);
  let start = null;
  canvas.addEventListener("pointerdown", (e) => {
    if (!state.slice || windowing() || e.shiftKey || e.button !== 0) return;
    start = viewerPoint(e);
    canvas.setPointerCapture(e.pointerId);
  });
  canvas.addEventListener("pointermove", (e) => {
    if (!start) return;
    const p = viewerPoint(e);
    state.box = [Math.min(start[0], p[0]), Math.min(start[1], p[1]), Math.max(start[0], p[0]), Math.max(start[1], p[1])];
    drawViewer();
  });
  canvas.addEventListener("pointerup", () => {
    if (start && state.box && (state.box[2] - state.box[0] < 3 || state.box[3] - state.box[1] < 3)) state.box = null;
    start = null;
    drawViewer();
  });
  canvas.addEventListener("keydown", (e) => {
    if (!state.slice) return;
    const step = e.shiftKey ? 10 : 2;
    if (!state.box) {
      const c = [state.slice.width / 2, state.slice.height / 2];
      state.box = [c[0] - 32, c[1] - 32, c[0] + 32, c[1] + 32];
    }
    const b = state.box;
    const moves = { ArrowLeft: [-step, 0], ArrowRight: [step, 0], ArrowUp: [0, -step], ArrowDown: [0, step] };
    if (moves[e.key]) { const [dx, dy] = moves[e.key]; b[0] += dx; b[2] += dx; b[1] += dy; b[3] += dy; }
    else if (e.key === "+" || e.key === "=") { b[0] -= step; b[1] -= step; b[2] += step; b[3] += step; }
    else if (e.key === "-" && b[2] - b[0] > 2 * step + 4) { b[0] += step; b[1] += step; b[2] -= step; b[3] -= step; }
    else if (e.key === "Enter") { search(); return; }
    else return;
    e.preventDefault();
    drawViewer();
  });
  document.querySelectorAll("#query .windows button").forEach((b) =>
    b.addEventListener("click", () => { setWindow(b.dataset.window); drawViewer(); refreshThumbnails(); }));
})();

// ---------- query sources ----------
async function openFile(file) {
  clearError();
  busy(`Uploading ${file.name}…`);
  try {
    const form = new FormData();
    form.append("image", file, file.name);
    const uploaded = await (await api("/api/uploads", { method: "POST", body: form })).json();
    const slice = await loadPixels(`/api/uploads/${uploaded.upload}/pixels`);
    slice.ownWindow = uploaded.window;
    state.slice = slice;
    state.source = { upload: uploaded.upload, spacing: uploaded.spacing_mm };
    state.file = file;
    state.box = null;
    setWindow(uploaded.window ? "dicom" : "soft");
    drawViewer();
    $("summary").textContent = `${file.name}: ${slice.width}×${slice.height}${uploaded.spacing_mm ? "" : " (no pixel spacing stated: 0.8 mm assumed)"}. Draw a box around the lesion, then search.`;
    $("viewer").focus();
  } catch (e) {
    showError(`Could not open ${file.name}: ${e.message}`);
  } finally {
    busy("");
  }
}

$("file").addEventListener("change", (e) => { if (e.target.files[0]) openFile(e.target.files[0]); });
const drop = $("drop");
["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
drop.addEventListener("drop", (e) => { const f = e.dataTransfer.files[0]; if (f) openFile(f); });

async function pickLesion(ref, { run = true } = {}) {
  clearError();
  busy("Loading lesion…");
  try {
    const detail = await (await api(`/api/lesions/${encodeURIComponent(ref)}`)).json();
    const slice = await loadPixels(`/api/lesions/${detail.id}/pixels`);
    slice.ownWindow = detail.window;
    state.slice = slice;
    state.source = { lesion: detail.id, key: detail.key };
    state.box = detail.bbox.slice();
    $("pick").value = detail.key;
    drawViewer();
    if (run) await search();
  } catch (e) {
    showError(`Could not load lesion ${ref}: ${e.message}`);
  } finally {
    busy("");
  }
}
$("pick-form").addEventListener("submit", (e) => { e.preventDefault(); if ($("pick").value.trim()) pickLesion($("pick").value.trim()); });

// ---------- filters and facets ----------
(function buildTypeFilters() {
  const box = $("f-types");
  for (const t of TYPES) {
    const label = document.createElement("label");
    label.className = "inline";
    label.innerHTML = `<input type="checkbox" name="type" value="${t}"> ${t.replace("_", " ")} <span class="count" data-type="${t}"></span>`;
    box.appendChild(label);
  }
})();

// The counts beside each filter choice come from the server: over the whole archive at
// start, over the matches after a search, each list counted as if its own choice were not
// made (so ticking "liver" leaves the other types' counts as they were).
function showFacets(facets, matched = null) {
  document.querySelectorAll("[data-type]").forEach((el) => { el.textContent = `(${number(facets.types[el.dataset.type] || 0)})`; });
  document.querySelectorAll("[data-sex]").forEach((el) => { el.textContent = `(${number(facets.sex[el.dataset.sex] || 0)})`; });
  $("facet-summary").textContent = matched === null ?
    `${number(facets.total)} lesions in the archive; the numbers in brackets count them.` :
    `The numbers in brackets count the matching lesions of each kind.`;
  const bins = (m) => Object.entries(m).map(([k, v]) => `${k}: ${v}`).join(", ");
  $("facet-bins").textContent = `Age ${bins(facets.age)} · Size (mm) ${bins(facets.size_mm)} · Location z ${bins(facets.location_z)}`;
}

function numberOrNull(id) { const v = $(id).value; return v === "" ? null : Number(v); }
function filters() {
  const f = {};
  const types = [...document.querySelectorAll("input[name=type]:checked")].map((i) => i.value);
  if (types.length) f.types = types;
  const sex = document.querySelector("input[name=sex]:checked").value;
  if (sex) f.sex = sex;
  const pairs = { age: ["age-min", "age-max"], size_mm: ["size-min", "size-max"], location_z: ["z-min", "z-max"] };
  for (const [key, [a, b]] of Object.entries(pairs)) {
    const lo = numberOrNull(a), hi = numberOrNull(b);
    if (lo !== null || hi !== null) f[key] = [lo, hi];
  }
  return f;
}

$("weight").addEventListener("input", () => { $("weighted").checked = true; showWeight(); });
$("weighted").addEventListener("change", showWeight);
function showWeight() {
  $("weight-out").textContent = $("weighted").checked ? `${$("weight").value}% image` : "RRF";
}

// ---------- the request and the URL ----------
function requestBody() {
  const body = { k: PAGE, offset: 0, group_by_patient: $("per-patient").checked };
  const text = $("text").value.trim();
  if (text) body.text = text;
  if (state.source && state.source.upload && state.box) {
    body.upload = state.source.upload;
    body.box = state.box.map((v) => v.toFixed(1)).join(",");
  } else if (state.source && state.source.lesion !== undefined) {
    body.lesion = state.source.lesion;
  }
  if (state.positives.length) body.positives = state.positives.map((p) => p.id);
  if (state.negatives.length) body.negatives = state.negatives.map((p) => p.id);
  const f = filters();
  if (Object.keys(f).length) body.filters = f;
  if ($("weighted").checked) { body.fusion = "weighted"; body.image_weight = Number($("weight").value) / 100; }
  // Shown only when the archive has report vectors; sent either way once shown.
  if (!$("semantic-row").hidden) body.semantic = $("semantic").checked;
  return body;
}

function toUrl(body) {
  const p = new URLSearchParams();
  if (body.text) p.set("q", body.text);
  if (body.lesion !== undefined) p.set("lesion", body.lesion);
  if (body.upload) { p.set("upload", body.upload); p.set("box", body.box); }
  if (body.positives) p.set("pos", body.positives.join(","));
  if (body.negatives) p.set("neg", body.negatives.join(","));
  const f = body.filters || {};
  if (f.types) p.set("types", f.types.join(","));
  if (f.sex) p.set("sex", f.sex);
  for (const key of ["age", "size_mm", "location_z"]) if (f[key]) p.set(key, f[key].map((v) => (v === null ? "" : v)).join(","));
  if (!body.group_by_patient) p.set("all", "1");
  if (body.fusion === "weighted") p.set("w", Math.round(body.image_weight * 100));
  if (body.semantic !== undefined) p.set("sem", body.semantic ? "1" : "0");
  p.set("win", windowParam());
  return `?${p.toString()}`;
}

async function fromUrl() {
  const p = new URLSearchParams(location.search);
  $("text").value = p.get("q") || "";
  document.querySelectorAll("input[name=type]").forEach((i) => { i.checked = (p.get("types") || "").split(",").includes(i.value); });
  const sex = p.get("sex") || "";
  document.querySelectorAll("input[name=sex]").forEach((i) => { i.checked = i.value === sex; });
  const pairs = { age: ["age-min", "age-max"], size_mm: ["size-min", "size-max"], location_z: ["z-min", "z-max"] };
  for (const [key, [a, b]] of Object.entries(pairs)) {
    const [lo, hi] = (p.get(key) || ",").split(",");
    $(a).value = lo || ""; $(b).value = hi || "";
  }
  $("per-patient").checked = p.get("all") !== "1";
  $("weighted").checked = p.has("w");
  if (p.has("w")) $("weight").value = p.get("w");
  if (p.has("sem")) $("semantic").checked = p.get("sem") === "1";
  showWeight();
  const win = p.get("win");
  if (win && PRESETS[win]) setWindow(win);
  else if (win && win.includes(",")) {
    const [low, high] = win.split(",").map(Number);
    state.window = { name: "custom", width: high - low, level: (low + high) / 2 };
  }
  state.positives = (p.get("pos") || "").split(",").filter(Boolean).map((id) => ({ id: Number(id) }));
  state.negatives = (p.get("neg") || "").split(",").filter(Boolean).map((id) => ({ id: Number(id) }));
  showRefine();
  if (p.has("lesion")) {
    await pickLesion(p.get("lesion"), { run: false });
  } else if (p.has("upload")) {
    try {
      const slice = await loadPixels(`/api/uploads/${encodeURIComponent(p.get("upload"))}/pixels`);
      state.slice = slice;
      state.source = { upload: p.get("upload") };
      state.box = p.get("box").split(",").map(Number);
    } catch (e) {
      showError(`The uploaded slice of this link is no longer held by the server; open the file again. (${e.message})`);
    }
  } else {
    state.slice = null; state.source = null; state.box = null;
  }
  drawViewer();
  const hasQuery = p.has("q") || p.has("lesion") || p.has("upload") || p.has("types") || p.has("sex") || p.has("pos");
  if (hasQuery) await search({ push: false });
}

// ---------- search and results ----------
function number(n) { return Number(n).toLocaleString("en-US"); }
function plural(n, one, many) { return `${number(n)} ${n === 1 ? one : many}`; }

// The count in plain words: patients when the list holds one result per patient, else lesions.
function countText(reply) {
  const lesions = plural(reply.matched_lesions, "lesion matches", "lesions match");
  if (!reply.group_by_patient) return plural(reply.total, "lesion matches", "lesions match");
  const patients = plural(reply.total, "patient", "patients");
  return reply.matched_lesions >= reply.total ? `${patients} · ${lesions}` : patients;
}

function showCount(reply, signals) {
  const summary = $("summary");
  summary.textContent = "";
  const count = document.createElement("strong");
  count.id = "count";
  count.textContent = countText(reply);
  summary.appendChild(count);
  const found = signals.length ? `found by ${signals.join(" + ")}` : "filters only";
  summary.append(` · ${found}${reply.degraded ? " (text only: " + reply.degraded_reason + ")" : ""}` +
    ` · ${reply.timings.total_ms.toFixed(1)} ms` +
    (reply.assumed_spacing_mm ? ` · pixel spacing assumed ${reply.assumed_spacing_mm} mm` : ""));
  const what = reply.group_by_patient ? plural(reply.total, "patient", "patients") : plural(reply.total, "lesion", "lesions");
  $("export-note").textContent = reply.total ?
    `An export holds the whole list (${what}), in this order, with how the search was made.` : "";
}

// A respelling the archive supports, offered when the text found little.
function showDidYouMean(suggested) {
  const el = $("did-you-mean");
  el.hidden = !suggested;
  $("did-you-mean-text").textContent = suggested || "";
}
$("did-you-mean-text").addEventListener("click", () => {
  $("text").value = $("did-you-mean-text").textContent;
  search();
});

async function search({ push = true, append = false } = {}) {
  if (state.loading) return;
  clearError();
  const body = append ? { ...state.lastBody, offset: state.offset } : requestBody();
  if (state.source && state.source.upload && !state.box && !append) {
    showError("Draw a box around the lesion on the slice first (drag on the image).");
    return;
  }
  state.loading = true;
  busy(append ? "Loading more results…" : "Searching…");
  try {
    const reply = await (await api("/api/search", json(body))).json();
    if (!append) {
      state.lastBody = body;
      state.hits = [];
      $("grid").textContent = "";
      if (push) history.pushState(null, "", toUrl(body));
    }
    state.hits.push(...reply.hits);
    state.offset = body.offset + reply.hits.length;
    // `total` is the length of the whole list, the same on every page.
    state.total = reply.total;
    reply.hits.forEach((hit) => $("grid").appendChild(card(hit)));
    showFacets(reply.facets, reply.matched_lesions);
    showSuggestion(reply.suggestion);
    if (!append) {
      showOutlook($("search-outlook"), reply.outlook);
      showDidYouMean(reply.did_you_mean);
    }
    const signals = [body.upload ? "image" : null, body.lesion !== undefined ? "similar lesion" : null, body.text ? "text" : null].filter(Boolean);
    showCount(reply, signals);
    if (reply.degraded) showError(`Image search unavailable, showing text results: ${reply.degraded_reason}`);
    // The server pages no deeper than max_offset: past it the export holds the rest.
    const deepest = state.limits ? state.limits.max_offset : Infinity;
    $("more").hidden = state.offset >= state.total || reply.hits.length === 0 || state.offset > deepest;
    $("paging-note").hidden = !(state.offset > deepest && state.offset < state.total);
    $("paging-note").textContent = state.limits ?
      `The first ${state.offset.toLocaleString("en")} results can be browsed here; Export holds the whole list.` : "";
  } catch (e) {
    showError(`Search failed: ${e.message}`);
  } finally {
    state.loading = false;
    busy("");
  }
}

function thumbUrl(id) {
  return `/api/lesions/${id}/image?window=${encodeURIComponent(windowParam())}&box=1&size=224&around_mm=90`;
}
// Images come through api() (so they carry the key) and are shown from a blob URL; a bare
// <img src> could not send the Authorization header.
async function showImage(img, url) {
  img.dataset.src = url;
  try {
    const blob = await (await api(url)).blob();
    if (img.dataset.src !== url) return; // a newer window was asked for meanwhile
    if (img.src.startsWith("blob:")) URL.revokeObjectURL(img.src);
    img.src = URL.createObjectURL(blob);
  } catch (e) {
    img.alt = `${img.alt} (image unavailable: ${e.message})`;
  }
}
function refreshThumbnails() {
  document.querySelectorAll(".card img").forEach((img) => showImage(img, thumbUrl(img.dataset.id)));
}

function escapeHtml(s) {
  return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}

function card(hit) {
  const l = hit.lesion;
  const li = document.createElement("li");
  li.className = "card";
  li.dataset.id = hit.id;
  const similarity = hit.image ? `cos ${hit.image.cosine.toFixed(3)}` : hit.text ? `BM25 ${hit.text.bm25.toFixed(1)}` : "";
  const where = `z ${l.location.z.toFixed(2)}`;
  li.innerHTML = `
    <img alt="${escapeHtml(l.coarse_type)} lesion ${escapeHtml(l.key)}" data-id="${hit.id}" tabindex="0">
    <div class="head"><strong>${escapeHtml(l.key)}</strong><span class="badge match-${hit.matched}" title="which signal matched">${hit.matched}</span></div>
    <div class="muted">${similarity} · score ${hit.score.toFixed(4)}${hit.image ? " · image #" + hit.image.rank : ""}${hit.text ? " · text #" + hit.text.rank : ""}${hit.semantic ? " · meaning cos " + hit.semantic.cosine.toFixed(3) : ""}</div>
    <div class="badges">
      <span class="badge">${escapeHtml(l.coarse_type.replace("_", " "))}</span>
      <span class="badge">${l.long_mm} × ${l.short_mm} mm</span>
      <span class="badge">${where}</span>
      <span class="badge">${l.age === null ? "age ?" : Math.round(l.age) + " y"}</span>
      <span class="badge">${l.sex === "female" ? "F" : l.sex === "male" ? "M" : "sex ?"}</span>
    </div>
    <p class="snippet"></p>
    <div class="buttons">
      <button type="button" data-act="like" title="Refine: more like this one">+ Like</button>
      <button type="button" data-act="dislike" title="Refine: less like this one">− Unlike</button>
      <button type="button" data-act="detail">Compare</button>
      <button type="button" data-act="pivot">More like this</button>
    </div>`;
  // The snippet is HTML from the server: report text escaped, matches in <b>.
  if (hit.text) li.querySelector(".snippet").innerHTML = hit.text.snippet;
  const img = li.querySelector("img");
  showImage(img, thumbUrl(hit.id));
  img.addEventListener("click", () => openDetail(hit.id));
  img.addEventListener("keydown", (e) => { if (e.key === "Enter") openDetail(hit.id); });
  li.querySelector("[data-act=like]").addEventListener("click", () => refine(hit, true));
  li.querySelector("[data-act=dislike]").addEventListener("click", () => refine(hit, false));
  li.querySelector("[data-act=detail]").addEventListener("click", () => openDetail(hit.id));
  li.querySelector("[data-act=pivot]").addEventListener("click", () => pivot(hit.id));
  if (state.positives.some((p) => p.id === hit.id)) li.classList.add("liked");
  if (state.negatives.some((p) => p.id === hit.id)) li.classList.add("disliked");
  return li;
}

function showSuggestion(s) {
  const el = $("suggestion");
  if (!s) { el.hidden = true; return; }
  el.hidden = false;
  el.innerHTML = `<strong>Suggested type: ${escapeHtml(s.coarse_type.replace("_", " "))}</strong>
    <span class="muted">(${s.neighbours} nearest typed lesions of other patients)</span><div class="votes"></div>`;
  const bar = el.querySelector(".votes");
  for (const v of s.votes) {
    const span = document.createElement("span");
    span.style.width = `${(v.share * 100).toFixed(1)}%`;
    span.textContent = `${v.coarse_type.replace("_", " ")} ${Math.round(v.share * 100)}%`;
    span.title = span.textContent;
    bar.appendChild(span);
  }
}

function showRefine() {
  const el = $("refine");
  el.textContent = "";
  for (const [list, cls, sign] of [[state.positives, "pos", "+"], [state.negatives, "neg", "−"]]) {
    for (const item of list) {
      const chip = document.createElement("button");
      chip.type = "button";
      chip.className = `chip ${cls}`;
      chip.textContent = `${sign} ${item.key || item.id} ×`;
      chip.setAttribute("aria-label", `Remove ${item.key || item.id} from the refinement`);
      chip.addEventListener("click", () => { list.splice(list.indexOf(item), 1); showRefine(); search(); });
      el.appendChild(chip);
    }
  }
}

function refine(hit, like) {
  const [to, from] = like ? [state.positives, state.negatives] : [state.negatives, state.positives];
  const i = from.findIndex((p) => p.id === hit.id);
  if (i >= 0) from.splice(i, 1);
  if (!to.some((p) => p.id === hit.id)) to.push({ id: hit.id, key: hit.key });
  showRefine();
  search();
}

function pivot(id) {
  state.positives = []; state.negatives = [];
  showRefine();
  $("detail").open && $("detail").close();
  pickLesion(String(id));
}

$("search-form").addEventListener("submit", (e) => { e.preventDefault(); search(); });
$("clear").addEventListener("click", () => {
  state.slice = null; state.source = null; state.box = null; state.positives = []; state.negatives = [];
  $("text").value = ""; $("pick").value = "";
  document.querySelectorAll("#filters input[type=checkbox][name=type]").forEach((i) => { i.checked = false; });
  document.querySelectorAll("#filters input[type=number]").forEach((i) => { i.value = ""; });
  showRefine(); drawViewer();
  $("grid").textContent = ""; $("more").hidden = true; $("suggestion").hidden = true; $("search-outlook").hidden = true;
  showDidYouMean(null); $("export-note").textContent = "";
  $("summary").textContent = "Open a slice and draw a box, pick a lesion, or type some text.";
  history.pushState(null, "", location.pathname);
});
$("more").addEventListener("click", () => search({ append: true }));
new IntersectionObserver((entries) => {
  if (entries.some((e) => e.isIntersecting) && !$("more").hidden) search({ append: true });
}).observe($("more"));
window.addEventListener("popstate", () => fromUrl());

// ---------- export ----------
// The export holds the whole result list, in its order, with its provenance (the search,
// filters, model, archive generation and time) at the top of the file.
const EXPORTS = { csv: "CSV", jsonl: "JSON Lines" };
async function exportAs(format) {
  clearError();
  const query = { ...(state.lastBody || requestBody()) };
  delete query.k; delete query.offset;
  busy(`Exporting ${EXPORTS[format]}…`);
  try {
    const response = await api("/api/export", json({ query, format }));
    const blob = await response.blob();
    const a = document.createElement("a");
    a.href = URL.createObjectURL(blob);
    a.download = `lesions.${format}`;
    document.body.appendChild(a);
    a.click();
    setTimeout(() => { URL.revokeObjectURL(a.href); a.remove(); }, 1000);
  } catch (e) {
    showError(`Export failed: ${e.message}`);
  } finally {
    busy("");
  }
}
$("export-csv").addEventListener("click", () => exportAs("csv"));
$("export-jsonl").addEventListener("click", () => exportAs("jsonl"));

// ---------- detail: side by side under one window ----------
const detail = { id: null, query: null, result: null, window: null };

function drawDetail() {
  render($("cmp-query"), detail.query && detail.query.slice, detail.window, detail.query && detail.query.box);
  render($("cmp-result"), detail.result && detail.result.slice, detail.window, detail.result && detail.result.box);
  document.querySelectorAll("#detail-windows button").forEach((b) =>
    b.setAttribute("aria-pressed", String(b.dataset.window === detail.window.name)));
}
attachWindowDrag($("cmp-query"), () => detail.window, drawDetail);
attachWindowDrag($("cmp-result"), () => detail.window, drawDetail);
for (const id of ["cmp-query", "cmp-result"]) {
  // In the detail view a plain drag changes the window too.
  const canvas = $(id);
  let drag = null;
  canvas.addEventListener("pointerdown", (e) => { if (!e.shiftKey && e.button === 0) { drag = { x: e.clientX, y: e.clientY, start: { ...detail.window } }; canvas.setPointerCapture(e.pointerId); } });
  canvas.addEventListener("pointermove", (e) => {
    if (!drag) return;
    detail.window = { name: "custom", width: Math.max(1, drag.start.width + (e.clientX - drag.x) * 4), level: drag.start.level + (e.clientY - drag.y) * 2 };
    drawDetail();
  });
  canvas.addEventListener("pointerup", () => { drag = null; });
}
document.querySelectorAll("#detail-windows button").forEach((b) => b.addEventListener("click", () => {
  const name = b.dataset.window;
  if (name === "dicom") {
    const own = detail.result && detail.result.slice.ownWindow;
    detail.window = own ? { name, width: own[1] - own[0], level: (own[0] + own[1]) / 2 } : { name, width: 400, level: 40 };
  } else {
    detail.window = { name, width: PRESETS[name][0], level: PRESETS[name][1] };
  }
  drawDetail();
}));
$("detail-close").addEventListener("click", () => $("detail").close());
$("detail-more").addEventListener("click", () => pivot(detail.id));

function followupChart(series) {
  if (series.length < 2) return `<p class="muted">No match in the patient's other studies.</p>`;
  const W = 420, H = 170, pad = 34;
  const max = Math.max(...series.map((s) => s.long_mm)) * 1.15;
  const x = (i) => pad + (i * (W - 2 * pad)) / (series.length - 1);
  const y = (v) => H - pad + 8 - (v / max) * (H - pad - 8);
  const path = (key) => series.map((s, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(s[key]).toFixed(1)}`).join(" ");
  const confidence = (s) => s.probability != null ? ` (${Math.round(s.probability * 100)}%)` : "";
  const dots = series.map((s, i) => `<circle class="dot" cx="${x(i)}" cy="${y(s.long_mm)}" r="4"><title>study ${s.study}: ${s.long_mm.toFixed(1)} × ${s.short_mm.toFixed(1)} mm${confidence(s)}</title></circle>
    <text x="${x(i)}" y="${H - 6}" text-anchor="middle">study ${s.study}${confidence(s)}</text>
    <text x="${x(i)}" y="${y(s.long_mm) - 8}" text-anchor="middle">${s.long_mm.toFixed(1)}</text>`).join("");
  return `<svg class="chart" viewBox="0 0 ${W} ${H}" role="img" aria-label="Long and short diameter over the studies">
    <line x1="${pad}" y1="${H - pad + 8}" x2="${W - pad}" y2="${H - pad + 8}" stroke="#ccc"/>
    <path class="line" d="${path("long_mm")}"/><path class="line short" d="${path("short_mm")}"/>${dots}
    <text x="4" y="12">mm (long: blue, short: green)</text></svg>`;
}

// The follow-up chart from the candidate chosen in each other study (the matcher's by
// default); the user can pick another candidate, or "not in this study", when it is wrong.
function showFollowups(followups) {
  const el = $("detail-followups");
  const query = followups.series.find((s) => s.id === followups.lesion);
  const chosen = new Map(followups.studies.filter((s) => !s.same_study).map((s) => [s.study, s.matched]));
  const render = () => {
    const series = [query];
    for (const s of followups.studies) {
      if (s.same_study) continue;
      const c = s.candidates.find((c) => c.id === chosen.get(s.study));
      if (c) series.push(c);
    }
    series.sort((a, b) => a.study - b.study);
    const first = series[0], last = series[series.length - 1];
    const growth = series.length > 1 && first.age != null && last.age != null && last.age > first.age ?
      `${((last.long_mm - first.long_mm) / (last.age - first.age)).toFixed(1)} mm/year` :
      series.length > 1 ? `${(100 * (Math.pow(last.long_mm / Math.max(first.long_mm, 0.1), 1 / (series.length - 1)) - 1)).toFixed(1)}% per study` : "";
    el.querySelector(".fu-chart").innerHTML = followupChart(series) + (growth ? `<p>Growth: ${escapeHtml(growth)}</p>` : "");
  };
  const m = followups.matcher;
  el.innerHTML = `<div class="fu-chart"></div><ul class="fu-studies"></ul>
    <p class="muted">Matcher fitted on ${m.pairs} real same-lesion pairs (${escapeHtml(m.fitted_on)}); leave-patient-out accuracy@1 ${(m.cross_validated_accuracy_at_1 * 100).toFixed(1)}%. A match is shown from ${Math.round(m.match_threshold * 100)}%.</p>`;
  const list = el.querySelector(".fu-studies");
  for (const s of followups.studies) {
    const li = document.createElement("li");
    li.dataset.study = s.study;
    const label = s.same_study ? `Study ${s.study} (same study, other series)` : `Study ${s.study}`;
    const options = s.candidates.map((c) => `<option value="${c.id}">${escapeHtml(c.key)} · ${c.long_mm.toFixed(1)} mm · ${Math.round(c.probability * 100)}%</option>`).join("");
    li.innerHTML = `<label>${escapeHtml(label)} <select class="fu-pick">${options}<option value="">not in this study (${Math.round(s.no_match_probability * 100)}%)</option></select></label>
      <button type="button" class="fu-open">Open</button>`;
    const select = li.querySelector("select");
    select.value = s.matched != null ? String(s.matched) : "";
    select.addEventListener("change", () => {
      if (!s.same_study) chosen.set(s.study, select.value ? Number(select.value) : null);
      render();
    });
    li.querySelector(".fu-open").addEventListener("click", () => { if (select.value) openDetail(Number(select.value)); });
    list.appendChild(li);
  }
  if (!followups.studies.length) list.innerHTML = `<li class="muted">The patient has no other study in the archive.</li>`;
  render();
}

// What became of similar lesions: evidence first; a prediction only where it was measured to
// beat the base rates on real pairs.
function outlookHtml(o) {
  const pct = (v) => `${Math.round(v * 100)}%`;
  const k = o.similar.length;
  const head = k ? `<p><strong>${o.grew} grew</strong> (&gt;20%), <strong>${o.stable} stayed</strong>, <strong>${o.shrank} shrank</strong> (&gt;20%) of the ${k} most similar lesions of other patients seen again` +
    (o.median_change_percent != null ? `; median change ${o.median_change_percent.toFixed(0)}%` : "") + `.</p>` :
    `<p class="muted">No lesion of another patient in this archive was matched in a later study.</p>`;
  const base = `<p class="muted">Base rates over ${o.reference_size} followed lesions: grew ${pct(o.base_rates.grew)}, stable ${pct(o.base_rates.stable)}, shrank ${pct(o.base_rates.shrank)}.</p>`;
  const prediction = o.prediction ? `<p>Outlook: grew ${pct(o.prediction.grew)}, stable ${pct(o.prediction.stable)}, shrank ${pct(o.prediction.shrank)}.</p>` : "";
  const rows = o.similar.map((s) => `<li><button type="button" class="ol-open" data-id="${s.from}">${escapeHtml(s.lesion ? s.lesion.key : String(s.from))}</button>
    ${escapeHtml(s.lesion ? s.lesion.coarse_type.replace("_", " ") : "")} · ${s.from_long_mm.toFixed(1)} → ${s.to_long_mm.toFixed(1)} mm
    (${s.change_percent >= 0 ? "+" : ""}${s.change_percent.toFixed(0)}%${s.years != null ? `, ${s.years.toFixed(1)} y` : ""}) · <span class="course ${s.course}">${s.course}</span></li>`).join("");
  return `<div class="outlook">${head}${prediction}${base}<p class="statement">${escapeHtml(o.statement)}</p>
    ${k ? `<details><summary>The similar lesions</summary><ol class="similar-courses">${rows}</ol></details>` : ""}</div>`;
}

function showOutlook(el, outlook) {
  if (!outlook) { el.hidden = true; el.innerHTML = ""; return; }
  el.hidden = false;
  el.innerHTML = `<h3>Outlook of similar lesions</h3>` + outlookHtml(outlook);
  el.querySelectorAll(".ol-open").forEach((b) => b.addEventListener("click", () => openDetail(Number(b.dataset.id))));
}

async function openDetail(id) {
  clearError();
  busy("Loading the comparison…");
  try {
    const [info, followups, outlook, pixels] = await Promise.all([
      api(`/api/lesions/${id}`).then((r) => r.json()),
      api(`/api/lesions/${id}/followups`).then((r) => r.json()),
      api(`/api/lesions/${id}/outlook`).then((r) => r.json()),
      loadPixels(`/api/lesions/${id}/pixels`),
    ]);
    pixels.ownWindow = info.window;
    detail.id = id;
    detail.result = { slice: pixels, box: info.bbox };
    detail.query = state.slice ? { slice: state.slice, box: state.box } : null;
    detail.window = { ...state.window };
    $("detail-title").textContent = `${info.key} · ${info.coarse_type.replace("_", " ")}`;
    $("cmp-query-cap").textContent = state.source && state.source.upload ? "Query: uploaded slice" :
      state.source && state.source.key ? `Query: ${state.source.key}` : "No image query";
    $("cmp-result-cap").textContent = `Result: ${info.key}`;
    $("detail-report").textContent = info.report || "(no report text)";
    const meta = {
      Type: info.coarse_type, "Size (mm)": `${info.long_mm} × ${info.short_mm}`,
      Location: `x ${info.location.x.toFixed(2)}, y ${info.location.y.toFixed(2)}, z ${info.location.z.toFixed(2)}`,
      Age: info.age ?? "?", Sex: info.sex, Split: info.split, "Patient / study": `${info.patient} / ${info.study}`,
      Tags: (info.tags || []).join(", ") || "–",
    };
    $("detail-meta").innerHTML = Object.entries(meta).map(([k, v]) => `<dt>${escapeHtml(k)}</dt><dd>${escapeHtml(v)}</dd>`).join("");
    showFollowups(followups);
    showOutlook($("detail-outlook"), outlook);
    const others = $("detail-others");
    others.textContent = "";
    for (const o of info.patient_lesions) {
      const li = document.createElement("li");
      li.innerHTML = `${escapeHtml(o.key)} · ${escapeHtml(o.coarse_type)} · ${o.long_mm} mm · study ${o.study} <button type="button">Open</button>`;
      li.querySelector("button").addEventListener("click", () => openDetail(o.id));
      others.appendChild(li);
    }
    if (!others.children.length) others.innerHTML = `<li class="muted">None</li>`;
    if (!$("detail").open) $("detail").showModal();
    drawDetail();
  } catch (e) {
    showError(`Could not open lesion ${id}: ${e.message}`);
  } finally {
    busy("");
  }
}

// ---------- adding a lesion (admin) ----------
// The server says whether it takes writes; the add is a task: 202, then its report is
// long-polled until it is done or failed.
let writesOn = false;

async function followTask(task) {
  for (let polls = 0; polls < 30; polls++) {
    const report = await (await api(`/api/tasks/${encodeURIComponent(task.id)}?wait=20`)).json();
    if (report.state === "done" || report.state === "failed") return report;
    $("add-status").textContent = `Adding… (${report.state})`;
  }
  throw new Error("the write did not finish within 10 minutes; see /api/tasks");
}

async function addLesion() {
  const form = new FormData();
  form.append("image", state.file, state.file.name);
  form.append("box", state.box.map((v) => Math.round(v)).join(","));
  for (const name of ["patient", "study", "type", "sex", "age", "spacing_mm", "report"]) {
    const value = $(`add-${name}`).value.trim();
    if (value) form.append(name, value);
  }
  $("add-status").textContent = "Adding… (queued)";
  try {
    const queued = await (await api("/api/lesions", { method: "POST", body: form })).json();
    const report = await followTask(queued);
    if (report.state === "failed") {
      const error = report.error || {};
      throw new Error(`${error.message || "failed"}${error.field ? ` [${error.field}]` : ""}`);
    }
    const { id, key, lesions } = report.result;
    $("add-status").innerHTML = `Added as lesion ${id} (${escapeHtml(key)}), generation ${report.generation}, ${lesions} lesions. <button type="button" id="add-view">Open it</button>`;
    $("add-view").addEventListener("click", () => openDetail(id));
    $("archive-status").textContent = `${lesions} lesions · generation ${report.generation}`;
  } catch (e) {
    $("add-status").textContent = "";
    showError(`Could not add the lesion: ${e.message}`);
  }
}

(function wireAdd() {
  const type = $("add-type");
  for (const t of TYPES) {
    const option = document.createElement("option");
    option.value = t;
    option.textContent = t.replace("_", " ");
    type.appendChild(option);
  }
  type.value = "unknown";
  $("add-open").addEventListener("click", () => {
    // A DICOM states its spacing (the server reads it); a PNG needs it given.
    $("add-spacing_mm").required = !(state.source && state.source.spacing);
    $("add-dialog").showModal();
    $("add-patient").focus();
  });
  $("add-cancel").addEventListener("click", () => $("add-dialog").close());
  $("add-form").addEventListener("submit", (e) => {
    e.preventDefault();
    $("add-dialog").close();
    clearError();
    addLesion();
  });
})();

// ---------- start ----------
(async function start() {
  setWindow("soft");
  drawViewer();
  showWeight();
  try {
    const [health, facets] = await Promise.all([api("/healthz").then((r) => r.json()), api("/api/facets").then((r) => r.json())]);
    $("archive-status").textContent = `${health.lesions} lesions · generation ${health.generation} · model ${health.model}`;
    writesOn = health.writes === true;
    state.limits = health.limits;
    if (health.semantic) {
      $("semantic-row").hidden = false;
      $("semantic").checked = health.semantic_default === true;
    }
    showFacets(facets);
  } catch (e) {
    showError(e.message);
  }
  await fromUrl();
})();
