// The mmindex search page: every value from the index is set as text (textContent, dataset), never
// as HTML; the query lives in the URL (/?collection=NAME&q=TEXT&like=ID&where=F&offset=N).
"use strict";

const PAGE = 24;
const $ = (id) => document.getElementById(id);
const state = { image: null, imageUrl: null, blobs: [] };

function apiKey() { return sessionStorage.getItem("mmindex-key"); }

async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {});
  if (apiKey()) headers.Authorization = "Bearer " + apiKey();
  const response = await fetch(path, Object.assign({}, options, { headers }));
  if (response.status === 401) {
    $("key-form").hidden = false;
    throw new Error("this server needs an API key");
  }
  return response;
}

async function errorText(response) {
  try {
    const body = await response.json();
    if (typeof body.detail === "string") return body.detail;
    if (Array.isArray(body.detail)) return body.detail.map((e) => (e.loc || []).join(".") + ": " + e.msg).join("; ");
  } catch (ignored) { /* not JSON */ }
  return "HTTP " + response.status;
}

function params() { return new URLSearchParams(window.location.search); }

function filtersFrom(text) { return text.split(";").map((f) => f.trim()).filter((f) => f); }

function readForm() {
  const p = new URLSearchParams();
  const set = (name, value) => { if (value) p.set(name, value); };
  set("collection", $("collection").value);
  set("q", $("q").value.trim());
  set("mode", $("mode").value === "auto" ? "" : $("mode").value);
  set("modality", $("modality").value);
  for (const f of filtersFrom($("where").value)) p.append("where", f);
  return p;
}

function fillForm(p) {
  if (p.get("collection")) $("collection").value = p.get("collection");
  $("q").value = p.get("q") || "";
  $("mode").value = p.get("mode") || "auto";
  $("modality").value = p.get("modality") || "";
  $("where").value = p.getAll("where").join("; ");
}

function navigate(p, replace) {
  const url = "/?" + p.toString();
  if (replace) history.replaceState(null, "", url); else history.pushState(null, "", url);
  run();
}

function requestBody(p) {
  const body = { collection: p.get("collection") || undefined, limit: PAGE, offset: Number(p.get("offset") || 0) };
  const where = p.getAll("where");
  if (p.get("modality")) where.push("modality=" + p.get("modality"));
  if (where.length) body.where = where;
  if (p.get("mode")) body.mode = p.get("mode");
  if (p.get("q")) body.text = p.get("q");
  if (p.get("like")) body.like = p.get("like");
  if (state.image) body.image = state.image;
  return body;
}

function clearResults() {
  for (const url of state.blobs) URL.revokeObjectURL(url);
  state.blobs = [];
  $("results").replaceChildren();
  $("prev").hidden = true;
  $("next").hidden = true;
}

async function run() {
  const p = params();
  fillForm(p);
  clearResults();
  if (!p.get("q") && !p.get("like") && !state.image) { $("status").textContent = ""; return; }
  $("status").textContent = "searching…";
  let response;
  try {
    response = await api("/search", { method: "POST", headers: { "Content-Type": "application/json" },
                                      body: JSON.stringify(requestBody(p)) });
  } catch (error) { $("status").textContent = error.message; return; }
  if (!response.ok) { $("status").textContent = await errorText(response); return; }
  const hits = await response.json();
  const offset = Number(p.get("offset") || 0);
  $("status").textContent = hits.length ? `results ${offset + 1}–${offset + hits.length}` : "no results";
  const collection = p.get("collection") || $("collection").value;
  for (const hit of hits) $("results").append(card(hit, collection));
  $("prev").hidden = offset === 0;
  $("next").hidden = hits.length < PAGE;
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}

function card(hit, collection) {
  const payload = hit.payload || {};
  const text = hit.text || payload.text || payload.caption || "";
  const node = element("article", "card");
  node.dataset.key = hit.key;
  node.dataset.pointId = hit.point_id;
  const media = element("div", "media");
  if (payload.modality === "image") {
    const img = element("img");
    img.alt = payload.path || hit.key;
    media.append(img);
    thumbnail(hit.point_id, collection, img);
  } else {
    media.append(element("p", "", text));
  }
  node.append(media);
  node.append(element("div", "score", `${hit.score_kind || "score"} ${Number(hit.score).toFixed(4)}`));
  node.append(element("div", "key", hit.key));
  if (payload.modality === "image" && text) node.append(element("div", "caption", text));
  if (Array.isArray(payload.heading_path) && payload.heading_path.length) {
    node.append(element("div", "caption", payload.heading_path.join(" › ")));
  }
  const labels = element("div", "labels");
  for (const label of payload.labels || []) labels.append(element("span", "", label));
  node.append(labels);
  const actions = element("div", "actions");
  const like = element("button", "more-like-this", "more like this");
  like.type = "button";
  like.addEventListener("click", () => {
    state.image = null; showQueryImage(null);
    const p = readForm(); p.delete("q"); p.set("like", hit.point_id); navigate(p);
  });
  actions.append(like);
  if (text) {
    const caption = element("button", "search-caption", "search with this caption");
    caption.type = "button";
    caption.addEventListener("click", () => {
      state.image = null; showQueryImage(null);
      const p = readForm(); p.set("q", text.slice(0, 4000)); navigate(p);
    });
    actions.append(caption);
  }
  node.append(actions);
  return node;
}

async function thumbnail(pointId, collection, img) {
  try {
    const response = await api(`/thumbnails/${encodeURIComponent(pointId)}?collection=${encodeURIComponent(collection)}`);
    if (!response.ok) { img.replaceWith(element("p", "missing", "image unavailable")); return; }
    const url = URL.createObjectURL(await response.blob());
    state.blobs.push(url);
    img.src = url;
  } catch (ignored) { img.replaceWith(element("p", "missing", "image unavailable")); }
}

function showQueryImage(file) {
  if (state.imageUrl) URL.revokeObjectURL(state.imageUrl);
  state.imageUrl = file ? URL.createObjectURL(file) : null;
  $("query-image").hidden = !file;
  if (file) $("query-thumb").src = state.imageUrl;
}

function useImage(file) {
  if (!file || !file.type.startsWith("image/")) return;
  const reader = new FileReader();
  reader.onload = () => {
    state.image = String(reader.result).split(",", 2)[1];
    showQueryImage(file);
    const p = readForm(); p.delete("like"); navigate(p);
  };
  reader.readAsDataURL(file);
}

async function init() {
  try {
    const health = await (await fetch("/health")).json();
    for (const name of health.collections) $("collection").append(new Option(name, name));
  } catch (ignored) { $("status").textContent = "the server does not answer"; }
  $("search").addEventListener("submit", (event) => { event.preventDefault(); navigate(readForm()); });
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem("mmindex-key", $("key").value);
    $("key-form").hidden = true;
    run();
  });
  $("image").addEventListener("change", () => useImage($("image").files[0]));
  $("clear-image").addEventListener("click", () => { state.image = null; showQueryImage(null); run(); });
  document.addEventListener("paste", (event) => {
    const file = [...(event.clipboardData || { files: [] }).files][0];
    if (file) useImage(file);
  });
  document.addEventListener("dragover", (event) => { event.preventDefault(); document.body.classList.add("dragging"); });
  document.addEventListener("dragleave", () => document.body.classList.remove("dragging"));
  document.addEventListener("drop", (event) => {
    event.preventDefault(); document.body.classList.remove("dragging");
    useImage(event.dataTransfer.files[0]);
  });
  const page = (delta) => {
    const p = params();
    p.set("offset", String(Math.max(0, Number(p.get("offset") || 0) + delta)));
    navigate(p);
  };
  $("prev").addEventListener("click", () => page(-PAGE));
  $("next").addEventListener("click", () => page(PAGE));
  window.addEventListener("popstate", run);
  run();
}

init();
