// volnet demo page: talks to the server's fixed JSON API and one WebSocket.
"use strict";

const TOKEN = document.querySelector('meta[name="volnet-token"]').content;
const $ = id => document.getElementById(id);
const metrics = { run: null, train: [], held: [], layers: [] };
const LAYER_COLOURS = ["#1e88e5", "#e53935", "#43a047", "#fb8c00", "#8e24aa", "#00acc1", "#6d4c41",
                       "#c0ca33", "#546e7a", "#d81b60"];
let lastVersion = null, refreshTimer = null, lastViews = 0;

function showError(message) {
  const box = $("error");
  box.textContent = message || ""; box.hidden = !message;
}

async function api(path, options) {
  const response = await fetch(path, options);
  const isJson = (response.headers.get("content-type") || "").startsWith("application/json");
  const body = isJson ? await response.json() : null;
  if (!response.ok) {
    const message = (body && body.error) || response.status + " " + response.statusText;
    showError(message);
    throw new Error(message);
  }
  return body;
}

function post(path, payload, type) {
  const json = type === undefined;
  return api(path, { method: "POST", body: json ? JSON.stringify(payload) : payload,
    headers: { "Content-Type": json ? "application/json" : type, "X-Volnet-Token": TOKEN } });
}

// ---- network ---------------------------------------------------------------------
function showSummary(net) {
  const body = document.querySelector("#summary tbody");
  body.innerHTML = "";
  net.rows.forEach(row => {
    const tr = document.createElement("tr");
    [row.name, row.type, row.volume, row.window, row.params.toLocaleString(),
     row.params_no_sharing.toLocaleString(), row.receptive_field].forEach((text, i) => {
      const td = document.createElement("td"); td.textContent = text;
      if (i >= 4) td.className = "num";
      tr.appendChild(td);
    });
    body.appendChild(tr);
  });
  $("total-params").textContent = net.total_params.toLocaleString();
  $("total-params").className = "num";
  document.querySelector(`input[name=model][value=${net.model}]`).checked = true;
  if (net.model === "custom") $("layers").value = net.layers;
}

async function build() {
  const model = document.querySelector("input[name=model]:checked").value;
  const net = await post("/api/net", { model, layers: $("layers").value });
  showError("");
  showSummary(net);
  refreshViews(true);
}

// ---- training --------------------------------------------------------------------
async function control(action) {
  const settings = action === "start" ? { lr: Number($("lr").value), batch_size: Number($("batch").value) } : undefined;
  const status = await post("/api/train", settings ? { action, settings } : { action });
  showError("");
  onStatus(status, true);
}

function onStatus(s, fromControl) {
  if (s.run !== metrics.run) {   // a new net or a reset, maybe from another tab
    const first = metrics.run === null;
    metrics.run = s.run; metrics.train = []; metrics.held = []; metrics.layers = [];
    if (!first) guard(async () => showSummary(await api("/api/net")))();
  }
  if (!fromControl) {
    metrics.train.push(...s.train); metrics.held.push(...s.held_out);
    metrics.layers.push(...(s.layer_stats || []));
  }
  const held = metrics.held.length ? metrics.held[metrics.held.length - 1].acc : null;
  $("status").textContent = `${s.state} | ${s.network} | epoch ${s.epoch} | step ${s.step} | ` +
    `${s.images_per_s.toFixed(0)} images/s` +
    (held === null ? "" : ` | held-out accuracy ${(100 * held).toFixed(1)}%`) + (s.error ? " | " + s.error : "");
  $("status").dataset.state = s.state;
  $("start").disabled = s.state !== "idle";
  $("pause").disabled = s.state !== "training";
  $("resume").disabled = s.state !== "paused";
  drawCharts();
  // Redraw filters, grid and activations when the weights changed; while training, at most
  // every 2 s, since each redraw runs the net on the server beside the training thread.
  const changed = s.version !== lastVersion;
  if (changed && (s.state !== "training" || Date.now() - lastViews > 2000)) refreshViews(false);
  lastVersion = s.version;
}

function drawCharts() {
  const trainLoss = smooth(metrics.train.map(p => [p.step, p.loss]), 0.9);
  const trainAcc = smooth(metrics.train.map(p => [p.step, p.acc]), 0.9);
  drawChart($("loss-chart"), [
    { name: "train", color: "#1e88e5", points: trainLoss },
    { name: "held-out", color: "#e53935", points: metrics.held.map(p => [p.step, p.loss]) }], {});
  drawChart($("acc-chart"), [
    { name: "train", color: "#1e88e5", points: trainAcc },
    { name: "held-out", color: "#e53935", points: metrics.held.map(p => [p.step, p.acc]) }],
    { yMin: 0, yMax: 1 });
  drawChart($("grad-chart"), layerSeries("grad_norm"), { log: true });
  drawChart($("ratio-chart"), layerSeries("update_ratio"), { log: true, reference: { y: 1e-3, label: "1e-3" } });
}

// One series per weight ("0.weight" -> layer "0") from the sampled layer statistics.
function layerSeries(key) {
  const names = metrics.layers.length ? Object.keys(metrics.layers[metrics.layers.length - 1][key]) : [];
  return names.map((name, i) => ({ name: name.replace(/\.weight$/, ""), color: LAYER_COLOURS[i % LAYER_COLOURS.length],
    points: metrics.layers.filter(p => name in p[key]).map(p => [p.step, p[key][name]]) }));
}

function connect() {
  const ws = new WebSocket(`ws://${location.host}/ws?token=${encodeURIComponent(TOKEN)}`);
  ws.onmessage = event => onStatus(JSON.parse(event.data), false);
  ws.onclose = () => setTimeout(connect, 1000);
}

// ---- views -----------------------------------------------------------------------
function refreshViews(now) {
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => {
    lastViews = Date.now();
    showFilters(); showGrid();
    if (!$("activations").hidden && $("activations").childElementCount) showActivations();
    if (drawn) predictDrawing();
  }, now ? 0 : 50);
}

async function showFilters() {
  const f = await api("/api/filters");
  $("filters-layer").textContent = f.layer === null ? "(no weighted layer)" : `(layer ${f.layer}, ${f.filters.length} shown)`;
  const colour = scaleColour(f.range[0], f.range[1]);
  $("filters-scale").replaceChildren(colourBar(f.range[0], f.range[1], "weight"));
  $("filters").replaceChildren(...f.values.map(v => colourCanvas(v, f.size[1], f.size[0], colour)));
}

async function showGrid() {
  const g = await api("/api/grid");
  $("grid-accuracy").textContent = `(${Math.round(g.accuracy * 100)}% of these ${g.labels.length} right)`;
  const sprite = await digitSprite();
  $("grid").replaceChildren(...g.labels.map((label, i) => {
    const tile = document.createElement("div");
    tile.className = "tile" + (g.predicted[i] !== label ? " wrong" : "");
    tile.title = `label ${label}, predicted ${g.predicted[i]} (${(g.confidence[i] * 100).toFixed(0)}%)`;
    const c = document.createElement("canvas"); c.width = 28; c.height = 28;
    c.getContext("2d").drawImage(sprite, i * 28, 0, 28, 28, 0, 0, 28, 28);
    const caption = document.createElement("span"); caption.textContent = g.predicted[i];
    tile.append(c, caption);
    tile.onclick = () => { $("digit-index").value = i; showActivations(); };
    return tile;
  }));
}

let spritePromise = null;
function digitSprite() {
  spritePromise = spritePromise || new Promise((resolve, reject) => {
    const img = new Image(); img.onload = () => resolve(img); img.onerror = reject;
    img.src = "/api/test-digits.png";
  });
  return spritePromise;
}

function probabilityBars(container, probs) {
  const best = probs.indexOf(Math.max(...probs));
  container.replaceChildren(...probs.flatMap((p, k) => {
    const label = document.createElement("span"); label.textContent = k;
    const bar = document.createElement("div"); bar.className = "bar" + (k === best ? " top" : "");
    bar.style.width = Math.max(1, 160 * p) + "px";
    const value = document.createElement("span"); value.textContent = (100 * p).toFixed(1) + "%";
    return [label, bar, value];
  }));
}

async function showActivations() {
  const a = await api(`/api/activations?index=${encodeURIComponent($("digit-index").value)}`);
  const box = $("activations");
  const head = document.createElement("div"); head.className = "layer";
  const title = document.createElement("div"); title.className = "layer-title";
  title.textContent = `input: held-out digit ${a.index}, label ${a.label}`;
  head.append(title, greyCanvas(a.input, 28, 28));
  const rows = a.layers.map(l => {
    const row = document.createElement("div"); row.className = "layer";
    const t = document.createElement("div"); t.className = "layer-title";
    t.textContent = `${l.name}: ${l.layer} -> ${l.shape.join("x")} `;
    row.appendChild(t);
    if (l.maps) {
      const colour = scaleColour(l.range[0], l.range[1]);
      t.appendChild(colourBar(l.range[0], l.range[1]));
      l.map_values.forEach(m => row.appendChild(colourCanvas(m, l.shape[2], l.shape[1], colour)));
    }
    else row.appendChild(vectorCanvas(l.values));
    return row;
  });
  const probs = document.createElement("div"); probs.className = "bars"; probabilityBars(probs, a.probs);
  const pt = document.createElement("div"); pt.className = "layer-title"; pt.textContent = "class probabilities";
  box.replaceChildren(head, ...rows, pt, probs);
}

function vectorCanvas(values) {
  const lo = Math.min(...values), hi = Math.max(...values), span = hi - lo || 1;
  const c = greyCanvas(values.map(v => Math.round(255 * (v - lo) / span)), values.length, 1, "vector");
  c.style.width = Math.min(520, values.length * 4) + "px";
  return c;
}

// ---- drawing ---------------------------------------------------------------------
let drawn = false, drawing = false, pending = false;
function setupDrawing() {
  const canvas = $("draw"), ctx = canvas.getContext("2d");
  const clear = () => { ctx.fillStyle = "#000"; ctx.fillRect(0, 0, canvas.width, canvas.height); drawn = false; };
  clear();
  const at = e => { const r = canvas.getBoundingClientRect();
    return [(e.clientX - r.left) * canvas.width / r.width, (e.clientY - r.top) * canvas.height / r.height]; };
  canvas.addEventListener("pointerdown", e => { drawing = true; const [x, y] = at(e);
    ctx.beginPath(); ctx.moveTo(x, y); ctx.lineTo(x + 0.1, y); stroke(ctx); });
  canvas.addEventListener("pointermove", e => { if (!drawing) return; const [x, y] = at(e);
    ctx.lineTo(x, y); stroke(ctx); });
  const end = () => { if (drawing) { drawing = false; predictDrawing(); } };
  canvas.addEventListener("pointerup", end);
  canvas.addEventListener("pointerleave", end);
  $("clear").onclick = () => { clear(); $("draw-prediction").textContent = "-"; $("draw-probs").replaceChildren();
    clearPreview(); };
}

// the "Seen by the net" preview goes with the drawing it shows
function clearPreview() { $("draw-input").getContext("2d").clearRect(0, 0, 56, 56); }

function stroke(ctx) {
  ctx.strokeStyle = "#fff"; ctx.lineWidth = 18; ctx.lineCap = ctx.lineJoin = "round"; ctx.stroke();
  drawn = true;
  if (!pending) { pending = true; setTimeout(() => { pending = false; predictDrawing(); }, 150); }
}

// replies may come back out of order (one sent mid-stroke, one at its end): only a reply
// newer than the one shown is drawn, so a late one never replaces the finished drawing's
let predictSent = 0, predictShown = 0;
function predictDrawing() {
  const seq = ++predictSent;
  $("draw").toBlob(async blob => {
    const r = await post("/api/predict", blob, "image/png");
    if (seq < predictShown) return;
    predictShown = seq;
    $("draw-prediction").textContent = drawn ? r.predicted : "-";
    probabilityBars($("draw-probs"), r.probs);
    if (!drawn) { clearPreview(); return; }     // cleared while this prediction was on its way
    const small = greyCanvas(r.input, 28, 28), target = $("draw-input").getContext("2d");
    target.imageSmoothingEnabled = false;
    target.clearRect(0, 0, 56, 56); target.drawImage(small, 0, 0, 56, 56);
  }, "image/png");
}

// ---- start -----------------------------------------------------------------------
function guard(fn) { return (...args) => fn(...args).catch(err => console.warn(err.message)); }
window.addEventListener("DOMContentLoaded", () => {
  $("build").onclick = guard(build);
  ["start", "pause", "resume", "reset"].forEach(a => { $(a).onclick = guard(() => control(a)); });
  $("show-activations").onclick = guard(showActivations);
  document.querySelectorAll("input[name=model]").forEach(r => {
    r.onchange = () => { if (r.value === "custom" && !$("layers").value) $("layers").value = $("layers").placeholder; };
  });
  setupDrawing();
  guard(async () => { showSummary(await api("/api/net")); refreshViews(true); connect(); })();
});
