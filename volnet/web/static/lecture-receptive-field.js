// /lecture/receptive-field: theoretical box and effective heat map of one unit.
"use strict";

let layers = [], view = null;
const control = name => document.querySelector(`[data-testid="${name}"]`);
function text(id, value) { control(id).textContent = value; }

async function fillLayers() {
  layers = (await api("/api/lecture/fields/layers?model=" + control("model").value)).layers;
  const select = control("layer");
  select.innerHTML = "";
  layers.forEach(l => {
    const option = document.createElement("option"); option.value = l.path;
    option.textContent = `${l.path} ${l.type} ${l.shape[1]}x${l.shape[2]}x${l.shape[0]}`;
    select.append(option);
  });
  select.selectedIndex = Math.floor(layers.length / 2);
  centreUnit();
}

function currentLayer() {
  return layers.find(l => l.path === control("layer").value);
}

function centreUnit() {
  const shape = currentLayer().shape;
  control("row").max = shape[1] - 1; control("col").max = shape[2] - 1;
  control("row").value = Math.floor(shape[1] / 2); control("col").value = Math.floor(shape[2] / 2);
}

const OUTPUTS = ["rf-size", "rf-jump", "rf-box-rows", "rf-box-cols", "input-size", "erf-rows",
                 "erf-cols", "samples", "layer-shape"];

// While a new field computes (VGG-16 takes seconds), the old numbers are not shown as if
// they were the new ones: the figures read "..." and the pictures fade.
function pending() {
  OUTPUTS.forEach(id => text(id, "\u2026"));
  [$("field"), $("units")].forEach(c => c.classList.add("stale"));
}

async function refresh() {
  const q = { model: control("model").value, layer: control("layer").value,
              row: control("row").value, col: control("col").value };
  pending();
  view = await latest("fields", "/api/lecture/fields?" + query(q));
  [$("field"), $("units")].forEach(c => c.classList.remove("stale"));
  text("samples", view.samples);
  const [h, w] = view.input_shape.slice(1);
  text("rf-size", view.size[0] === view.size[1] ? `${view.size[0]}x${view.size[0]}` : view.size.join("x"));
  text("rf-jump", view.jump.join("x"));
  text("rf-box-rows", `${view.box[0][0]} to ${view.box[0][1]}`);
  text("rf-box-cols", `${view.box[1][0]} to ${view.box[1][1]}`);
  text("input-size", `${h}x${w}`);
  const e = view.effective_box;
  text("erf-rows", e ? `${e[0]} to ${e[2]}` : "none");
  text("erf-cols", e ? `${e[1]} to ${e[3]}` : "none");
  text("layer-shape", `${view.layer} output ${view.output_shape[1]}x${view.output_shape[2]}x${view.output_shape[0]}: click a unit`);
  drawField(h, w); drawUnits();
}

function drawField(h, w) {
  const canvas = $("field"), scale = Math.max(1, Math.floor(336 / Math.max(h, w)));
  canvas.width = w * scale; canvas.height = h * scale;
  const ctx = canvas.getContext("2d");
  for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
    const [r, g, b] = hot(view.effective[i * w + j] / 255);
    ctx.fillStyle = `rgb(${r},${g},${b})`; ctx.fillRect(j * scale, i * scale, scale, scale);
  }
  const [[top, bottom], [left, right]] = view.box;
  ctx.strokeStyle = "#00e5ff"; ctx.lineWidth = 2;
  ctx.strokeRect(left * scale, top * scale, (right - left + 1) * scale, (bottom - top + 1) * scale);
  const legend = $("field-legend"); legend.innerHTML = "";
  legend.append(colourBar(0, view.effective_max, "|gradient|"));
}

function drawUnits() {
  const canvas = $("units"), [rows, cols] = view.output_shape.slice(1);
  const scale = Math.max(2, Math.floor(240 / Math.max(rows, cols)));
  canvas.width = cols * scale; canvas.height = rows * scale;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#eceff1"; ctx.fillRect(0, 0, canvas.width, canvas.height);
  ctx.strokeStyle = "#b0bec5";
  if (scale >= 6) for (let i = 0; i <= rows; i++) for (let j = 0; j <= cols; j++) ctx.strokeRect(j * scale, i * scale, scale, scale);
  ctx.fillStyle = "#e65100"; ctx.fillRect(view.unit[1] * scale, view.unit[0] * scale, scale, scale);
  ctx.strokeStyle = "#e65100"; ctx.lineWidth = 2; ctx.beginPath();   // a ring, visible at any scale
  ctx.arc((view.unit[1] + 0.5) * scale, (view.unit[0] + 0.5) * scale, Math.max(8, scale), 0, 2 * Math.PI);
  ctx.stroke(); ctx.lineWidth = 1;
  canvas.onclick = event => {   // the layer chosen now, also while its grid is still computing
    const box = canvas.getBoundingClientRect(), [, rows, cols] = currentLayer().shape;
    control("row").value = Math.min(rows - 1, Math.floor((event.clientY - box.top) / box.height * rows));
    control("col").value = Math.min(cols - 1, Math.floor((event.clientX - box.left) / box.width * cols));
    guard(refresh)();
  };
}

async function start() {
  (await api("/api/lecture/fields/models")).models.forEach(m => {
    const option = document.createElement("option"); option.value = option.textContent = m;
    control("model").append(option);
  });
  await fillLayers();
  control("model").addEventListener("change", guard(async () => {
    pending(); await fillLayers(); await refresh(); }));
  control("layer").addEventListener("change", () => { centreUnit(); guard(refresh)(); });
  onInputs(["row", "col"], guard(refresh));
  await refresh();
}
guard(start)();
